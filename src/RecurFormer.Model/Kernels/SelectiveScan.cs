using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using static TorchSharp.torch;

namespace RecurFormer.Model.Kernels;

/// <summary>
/// Mamba's selective scan on the CPU, linear in the sequence length:
/// h_t = exp(Δ_t ⊙ A) ⊙ h_{t−1} + (Δ_t x_t) ⊗ B_t, y_t = h_t C_t + D ⊙ x_t, step by step over time, 16 channels per
/// 512-bit vector (one vector per state index, kept for the whole sequence), channels split across threads. Work
/// and memory grow with the number of tokens; the chunked closed form it replaces on the CPU builds a
/// [channels, state, c, c] decay matrix per chunk of c tokens. The one scan loop of the project: the mixer's fused
/// prefill (<see cref="MambaPrefillKernel"/>) runs it with Δ computed on the fly.
/// </summary>
public static unsafe class SelectiveScan
{
    internal const int Lanes = 16;

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
        var rows = new ScanRows(TensorMemory.Pointer<float>(x), TensorMemory.Pointer<float>(b), TensorMemory.Pointer<float>(c), stateSize,
            TensorMemory.Pointer<float>(y), tokens, inner, stateSize);
        var aPointer = TensorMemory.Pointer<float>(a);
        var dPointer = TensorMemory.Pointer<float>(d);
        var statePointer = TensorMemory.Pointer<float>(state);
        var deltas = new GivenDeltas(TensorMemory.Pointer<float>(dt), inner);
        threads ??= KernelThreads.Single;
        threads.Run(thread =>
        {
            var (start, end) = threads.Share(thread, inner, Lanes);
            for (var first = start; first < end; first += Lanes)
            {
                Channels(rows, deltas, negativeA: true, aPointer, dPointer, statePointer, first, Math.Min(Lanes, end - first));
            }
        });
        return y;
    }

    /// <summary>Where a scan reads x, B, C and writes y: token t's row at t × stride.</summary>
    internal readonly struct ScanRows(float* x, float* b, float* c, int bcStride, float* y, int tokens, int inner, int state)
    {
        public readonly float* X = x, B = b, C = c, Y = y;
        public readonly int BcStride = bcStride, Tokens = tokens, Inner = inner, State = state;
    }

    /// <summary>Where Δ comes from, per token and block of 16 channels (specialised per kind by the JIT).</summary>
    internal interface IDeltas
    {
        void Start(int first, int count, float* lane);
        Vector512<float> At(int token);
    }

    /// <summary>Δ given as a [T, dInner] table.</summary>
    internal struct GivenDeltas(float* dt, int inner) : IDeltas
    {
        private int _first, _count;
        private float* _lane;

        public void Start(int first, int count, float* lane)
        {
            _first = first;
            _count = count;
            _lane = lane;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public readonly Vector512<float> At(int token) => Load(dt + (long)token * inner + _first, _count, _lane);
    }

    /// <summary>
    /// Scans up to 16 channels from <paramref name="first"/> over every token, continuing from <paramref name="state"/>
    /// ([dInner, dState], updated). A is −exp(<paramref name="a"/>) when <paramref name="negativeA"/> is false (A_log given).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Channels<TDeltas>(in ScanRows rows, TDeltas deltas, bool negativeA, float* a, float* d, float* state, int first, int count)
        where TDeltas : struct, IDeltas
    {
        int n = rows.State, inner = rows.Inner;
        var h = stackalloc Vector512<float>[n];
        var decay = stackalloc Vector512<float>[n];
        var lane = stackalloc float[Lanes];
        for (var s = 0; s < n; s++)
        {
            h[s] = Gather(state + (long)first * n + s, n, count, lane);
            var given = Gather(a + (long)first * n + s, n, count, lane);
            decay[s] = negativeA ? given : -FastExp.Exp(given);
        }
        var skip = Gather(d + first, 1, count, lane);
        deltas.Start(first, count, lane);
        var pairs = n & ~1;
        for (var t = 0; t < rows.Tokens; t++)
        {
            var delta = deltas.At(t);
            var input = Load(rows.X + (long)t * inner + first, count, lane);
            var drive = delta * input;
            var even = skip * input;
            var odd = Vector512<float>.Zero;
            var bt = rows.B + (long)t * rows.BcStride;
            var ct = rows.C + (long)t * rows.BcStride;
            // Two states per iteration into two sums: the sum over states is a dependency chain otherwise.
            for (var s = 0; s < pairs; s += 2)
            {
                var h0 = Vector512.FusedMultiplyAdd(FastExp.Exp(delta * decay[s]), h[s], drive * Vector512.Create(bt[s]));
                var h1 = Vector512.FusedMultiplyAdd(FastExp.Exp(delta * decay[s + 1]), h[s + 1], drive * Vector512.Create(bt[s + 1]));
                h[s] = h0;
                h[s + 1] = h1;
                even = Vector512.FusedMultiplyAdd(h0, Vector512.Create(ct[s]), even);
                odd = Vector512.FusedMultiplyAdd(h1, Vector512.Create(ct[s + 1]), odd);
            }
            if (pairs < n)
            {
                var last = Vector512.FusedMultiplyAdd(FastExp.Exp(delta * decay[pairs]), h[pairs], drive * Vector512.Create(bt[pairs]));
                h[pairs] = last;
                even = Vector512.FusedMultiplyAdd(last, Vector512.Create(ct[pairs]), even);
            }
            Store(even + odd, rows.Y + (long)t * inner + first, count, lane);
        }
        for (var s = 0; s < n; s++)
        {
            Scatter(h[s], state + (long)first * n + s, n, count, lane);
        }
    }

    /// <summary>count values <paramref name="stride"/> apart as one vector (zeros past count).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<float> Gather(float* source, int stride, int count, float* lane)
    {
        for (var i = 0; i < Lanes; i++)
        {
            lane[i] = i < count ? source[(long)i * stride] : 0f;
        }
        return Vector512.Load(lane);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Scatter(Vector512<float> value, float* target, int stride, int count, float* lane)
    {
        value.Store(lane);
        for (var i = 0; i < count; i++)
        {
            target[(long)i * stride] = lane[i];
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<float> Load(float* source, int count, float* lane) =>
        count == Lanes ? Vector512.Load(source) : Gather(source, 1, count, lane);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Store(Vector512<float> value, float* target, int count, float* lane)
    {
        if (count == Lanes)
        {
            value.Store(target);
            return;
        }
        Scatter(value, target, 1, count, lane);
    }
}
