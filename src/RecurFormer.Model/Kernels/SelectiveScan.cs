using System.Runtime.Intrinsics;
using static TorchSharp.torch;

namespace RecurFormer.Model.Kernels;

/// <summary>
/// Mamba's selective scan on the CPU, linear in the sequence length:
/// h_t = exp(Δ_t ⊙ A) ⊙ h_{t−1} + (Δ_t x_t) ⊗ B_t, y_t = h_t C_t + D ⊙ x_t, step by step over time, 16 channels per
/// 512-bit vector (one vector per state index, kept for the whole sequence), channels split across threads. Work
/// and memory grow with the number of tokens; the chunked closed form it replaces on the CPU builds a
/// [channels, state, c, c] decay matrix per chunk of c tokens.
/// </summary>
public static unsafe class SelectiveScan
{
    private const int Lanes = 16;

    /// <summary>
    /// x, dt [T, dInner]; b, c [T, dState]; a [dInner, dState] (negative); d [dInner]; state [dInner, dState], read as
    /// h_0 and overwritten with h_T; all float32, contiguous, on the CPU. Returns y [T, dInner].
    /// </summary>
    public static Tensor Forward(Tensor x, Tensor dt, Tensor b, Tensor c, Tensor a, Tensor d, Tensor state, KernelThreads? threads = null)
    {
        var tokens = (int)x.shape[0];
        var inner = (int)x.shape[1];
        var stateSize = (int)a.shape[1];
        x = x.contiguous();
        dt = dt.contiguous();
        b = b.contiguous();
        c = c.contiguous();
        a = a.contiguous();
        var y = empty(tokens, inner, ScalarType.Float32);
        var p = new Pointers(TensorMemory.Pointer<float>(x), TensorMemory.Pointer<float>(dt), TensorMemory.Pointer<float>(b),
            TensorMemory.Pointer<float>(c), TensorMemory.Pointer<float>(a), TensorMemory.Pointer<float>(d),
            TensorMemory.Pointer<float>(state), TensorMemory.Pointer<float>(y), tokens, inner, stateSize);
        threads ??= KernelThreads.Single;
        threads.Run(thread =>
        {
            var (start, end) = threads.Share(thread, inner, Lanes);
            Channels(p, start, end);
        });
        return y;
    }

    private readonly struct Pointers(float* x, float* dt, float* b, float* c, float* a, float* d, float* h, float* y, int tokens, int inner, int state)
    {
        public readonly float* X = x, Dt = dt, B = b, C = c, A = a, D = d, H = h, Y = y;
        public readonly int Tokens = tokens, Inner = inner, State = state;
    }

    private static void Channels(Pointers p, int start, int end)
    {
        var channel = start;
        if (Vector512.IsHardwareAccelerated && p.State <= 64)
        {
            for (; channel + Lanes <= end; channel += Lanes)
            {
                SixteenChannels(p, channel);
            }
        }
        for (; channel < end; channel++)
        {
            OneChannel(p, channel);
        }
    }

    private static void SixteenChannels(Pointers p, int first)
    {
        int n = p.State, inner = p.Inner;
        var h = stackalloc Vector512<float>[n];
        var a = stackalloc Vector512<float>[n];
        var column = stackalloc float[Lanes];
        for (var s = 0; s < n; s++)
        {
            for (var i = 0; i < Lanes; i++)
            {
                column[i] = p.H[(long)(first + i) * n + s];
            }
            h[s] = Vector512.Load(column);
            for (var i = 0; i < Lanes; i++)
            {
                column[i] = p.A[(long)(first + i) * n + s];
            }
            a[s] = Vector512.Load(column);
        }
        var skip = Vector512.Load(p.D + first);
        for (var t = 0; t < p.Tokens; t++)
        {
            var offset = (long)t * inner + first;
            var delta = Vector512.Load(p.Dt + offset);
            var input = Vector512.Load(p.X + offset);
            var drive = delta * input;
            var output = skip * input;
            var bt = p.B + (long)t * n;
            var ct = p.C + (long)t * n;
            for (var s = 0; s < n; s++)
            {
                var next = Vector512.FusedMultiplyAdd(Vector512.Exp(delta * a[s]), h[s], drive * bt[s]);
                h[s] = next;
                output = Vector512.FusedMultiplyAdd(next, Vector512.Create(ct[s]), output);
            }
            output.Store(p.Y + offset);
        }
        for (var s = 0; s < n; s++)
        {
            h[s].Store(column);
            for (var i = 0; i < Lanes; i++)
            {
                p.H[(long)(first + i) * n + s] = column[i];
            }
        }
    }

    private static void OneChannel(Pointers p, int channel)
    {
        int n = p.State, inner = p.Inner;
        var h = p.H + (long)channel * n;
        var a = p.A + (long)channel * n;
        for (var t = 0; t < p.Tokens; t++)
        {
            var offset = (long)t * inner + channel;
            float delta = p.Dt[offset], input = p.X[offset];
            var output = p.D[channel] * input;
            for (var s = 0; s < n; s++)
            {
                h[s] = MathF.Exp(delta * a[s]) * h[s] + delta * input * p.B[(long)t * n + s];
                output += h[s] * p.C[(long)t * n + s];
            }
            p.Y[offset] = output;
        }
    }
}
