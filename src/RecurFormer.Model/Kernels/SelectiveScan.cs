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
    /// <param name="gate">
    /// When given, training's element-wise work is done in the kernel instead of separate libtorch operations (fused):
    /// <paramref name="dt"/> is taken before its softplus (Δ = softplus(dt)), and y leaves multiplied by SiLU(gate).
    /// </param>
    /// <param name="into">Where to write y (contiguous [T, dInner] float32, e.g. one sequence's rows of a batch's output); a new tensor when null.</param>
    public static Tensor Forward(Tensor x, Tensor dt, Tensor b, Tensor c, Tensor a, Tensor d, Tensor state, KernelThreads? threads = null, Tensor? gate = null,
        Tensor? into = null)
    {
        var inputs = new Inputs(x, dt, b, c, a, d);
        var (tokens, inner) = (inputs.Tokens, inputs.Inner);
        var y = into ?? empty(tokens, inner, ScalarType.Float32);
        var rows = inputs.Rows(y);
        var aPointer = TensorMemory.Pointer<float>(inputs.A);
        var dPointer = TensorMemory.Pointer<float>(inputs.D);
        var statePointer = TensorMemory.Pointer<float>(state);
        var dtPointer = TensorMemory.Pointer<float>(inputs.Dt);
        gate = gate?.contiguous();
        var gatePointer = gate is null ? null : TensorMemory.Pointer<float>(gate);
        threads ??= KernelThreads.Single;
        threads.Run(thread =>
        {
            var (start, end) = threads.Share(thread, inner, Lanes);
            var lane = stackalloc float[Lanes];
            for (var first = start; first < end; first += Lanes)
            {
                var count = Math.Min(Lanes, end - first);
                Channels(rows, new GivenDeltas(dtPointer, inner, softplus: gatePointer != null), negativeA: true, aPointer, dPointer, statePointer, first, count);
                if (gatePointer == null)
                {
                    continue;
                }
                for (var t = 0; t < tokens; t++) // while these channels' rows are still in cache
                {
                    var at = (long)t * inner + first;
                    Store(Load(rows.Y + at, count, lane) * FastExp.Silu(Load(gatePointer + at, count, lane)), rows.Y + at, count, lane);
                }
            }
        });
        inputs.KeepAlive(); // contiguous() may have made copies that only their pointers reference
        GC.KeepAlive(gate);
        return y;
    }

    /// <summary>
    /// The gradients of <see cref="Forward"/> for one sequence from the state <paramref name="initialState"/> (zeros when
    /// null; not differentiated): given gy = ∂L/∂y [T, dInner], returns ∂L/∂x, ∂L/∂Δ [T, dInner], ∂L/∂B, ∂L/∂C
    /// [T, dState], ∂L/∂A [dInner, dState] and ∂L/∂D [dInner], all float32. Linear in T like the forward: each block
    /// of 16 channels re-runs the forward recurrence into a per-thread buffer of its states (T × dState vectors, no
    /// graph, nothing kept between calls), then walks back with the adjoint state r_t = ∂L/∂h_t:
    /// r_t = gy_t C_t + exp(Δ_{t+1} A) r_{t+1}; ∂x_t = D gy_t + Δ_t Σ_n r_t B_t; ∂Δ_t = Σ_n r_t (A e_t h_{t−1} + x_t B_t);
    /// ∂A = Σ_t r_t Δ_t e_t h_{t−1}; ∂B_t = Σ_channels r_t Δ_t x_t; ∂C_t = Σ_channels gy_t h_t; ∂D = Σ_t gy_t x_t.
    /// The sums over channels run in the vector lanes of a per-thread table and are folded once at the end.
    /// </summary>
    /// <param name="gate">As in <see cref="Forward"/> (fused): then ∂Δ is the gradient of dt before its softplus, and the gate's is returned too.</param>
    /// <param name="results">
    /// Where to put the gradients instead of new tensors (contiguous float32, e.g. one sequence's rows of a batch's): x's,
    /// Δ's and the gate's are written, B's, C's, A's and D's added to (so that the sequences of a batch sum into one A and D).
    /// </param>
    public static ScanGradients Backward(Tensor x, Tensor dt, Tensor b, Tensor c, Tensor a, Tensor d, Tensor? initialState, Tensor gradY, KernelThreads? threads = null,
        Tensor? gate = null, ScanGradients? results = null)
    {
        var inputs = new Inputs(x, dt, b, c, a, d);
        var (tokens, inner, stateSize) = (inputs.Tokens, inputs.Inner, inputs.State);
        gradY = gradY.contiguous();
        gate = gate?.contiguous();
        // x's and Δ's are written whole by the kernel; the others are sums.
        var gradients = results ?? new ScanGradients(empty(tokens, inner), empty(tokens, inner), zeros(tokens, stateSize), zeros(tokens, stateSize),
            zeros(inner, stateSize), zeros(inner), gate is null ? null : empty(tokens, inner));
        threads ??= KernelThreads.Single;
        var table = (long)tokens * stateSize;
        var scratch = TensorMemory.Allocate<Vector512<float>>(threads.Count * 3 * table); // per thread: states, ∂B lanes, ∂C lanes
        try
        {
            var rows = inputs.Rows(null);
            var into = new GradientRows(TensorMemory.Pointer<float>(gradY), TensorMemory.Pointer<float>(gradients.X), TensorMemory.Pointer<float>(gradients.Dt),
                TensorMemory.Pointer<float>(gradients.A), TensorMemory.Pointer<float>(gradients.D),
                gate is null ? null : TensorMemory.Pointer<float>(gate), gradients.Gate is null ? null : TensorMemory.Pointer<float>(gradients.Gate));
            var dtPointer = TensorMemory.Pointer<float>(inputs.Dt);
            var aPointer = TensorMemory.Pointer<float>(inputs.A);
            var dPointer = TensorMemory.Pointer<float>(inputs.D);
            initialState = initialState?.contiguous();
            var h0 = initialState is null ? null : TensorMemory.Pointer<float>(initialState);
            threads.Run(thread =>
            {
                var states = scratch + thread * 3 * table;
                var (start, end) = threads.Share(thread, inner, Lanes);
                for (var first = start; first < end; first += Lanes)
                {
                    ChannelGradients(rows, into, dtPointer, aPointer, dPointer, h0, first, Math.Min(Lanes, end - first), states, states + table, states + 2 * table);
                }
            });
            // Fold the lanes of every thread's ∂B and ∂C tables (each lane holds one channel's share).
            var gradB = TensorMemory.Span<float>(gradients.B);
            var gradC = TensorMemory.Span<float>(gradients.C);
            for (var thread = 0; thread < threads.Count; thread++)
            {
                var lanesB = scratch + thread * 3 * table + table;
                var lanesC = lanesB + table;
                for (long i = 0; i < table; i++)
                {
                    gradB[(int)i] += Vector512.Sum(lanesB[i]);
                    gradC[(int)i] += Vector512.Sum(lanesC[i]);
                }
            }
        }
        finally
        {
            TensorMemory.Free(scratch);
            inputs.KeepAlive();
            GC.KeepAlive(gate);
            GC.KeepAlive(gradY);
            GC.KeepAlive(initialState);
        }
        return gradients;
    }

    /// <summary>A scan's inputs as contiguous tensors (the caller keeps them alive while their pointers are used).</summary>
    private readonly struct Inputs(Tensor x, Tensor dt, Tensor b, Tensor c, Tensor a, Tensor d)
    {
        public readonly Tensor X = x.contiguous(), Dt = dt.contiguous(), B = b.contiguous(), C = c.contiguous(), A = a.contiguous(), D = d.contiguous();
        public int Tokens => (int)X.shape[0];
        public int Inner => (int)X.shape[1];
        public int State => (int)A.shape[1];

        public void KeepAlive()
        {
            GC.KeepAlive(X);
            GC.KeepAlive(Dt);
            GC.KeepAlive(B);
            GC.KeepAlive(C);
            GC.KeepAlive(A);
            GC.KeepAlive(D);
        }

        public ScanRows Rows(Tensor? y) => new(TensorMemory.Pointer<float>(X), TensorMemory.Pointer<float>(B), TensorMemory.Pointer<float>(C), State,
            y is null ? null : TensorMemory.Pointer<float>(y), Tokens, Inner, State);
    }

    /// <summary>The gradients of one scan: x and Δ [T, dInner], B and C [T, dState], A [dInner, dState], D [dInner]; the gate's [T, dInner] when fused.</summary>
    public sealed record ScanGradients(Tensor X, Tensor Dt, Tensor B, Tensor C, Tensor A, Tensor D, Tensor? Gate = null);

    /// <summary>
    /// Where a backward scan reads ∂L/∂y and writes the gradients of x, Δ (rows of dInner), A and D; with a gate (fused),
    /// where it reads the gate and writes its gradient, and Δ is taken before its softplus.
    /// </summary>
    private readonly struct GradientRows(float* gradY, float* gradX, float* gradDt, float* gradA, float* gradD, float* gate, float* gradGate)
    {
        public readonly float* GradY = gradY, GradX = gradX, GradDt = gradDt, GradA = gradA, GradD = gradD, Gate = gate, GradGate = gradGate;
        public bool Fused => Gate != null;
    }

    /// <summary>Backward through up to 16 channels from <paramref name="first"/>: re-runs their forward, then walks back.</summary>
    /// <param name="states">T × dState vectors: h_t of these channels.</param>
    /// <param name="lanesB">T × dState vectors, accumulated: ∂B_t[n] per channel lane.</param>
    /// <param name="lanesC">As lanesB, for ∂C.</param>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ChannelGradients(in ScanRows rows, in GradientRows into, float* dt, float* a, float* d, float* initialState, int first, int count,
        Vector512<float>* states, Vector512<float>* lanesB, Vector512<float>* lanesC)
    {
        int n = rows.State, inner = rows.Inner;
        var decay = stackalloc Vector512<float>[n];
        var decay2 = stackalloc Vector512<float>[n];   // A·log₂e: exp(Δ·A) = 2^(Δ · A·log₂e), one multiplication fewer per exp
        var h0 = stackalloc Vector512<float>[n];
        var adjoint = stackalloc Vector512<float>[n];
        var gradA = stackalloc Vector512<float>[n];
        var lane = stackalloc float[Lanes];
        for (var s = 0; s < n; s++)
        {
            decay[s] = Gather(a + (long)first * n + s, n, count, lane);
            decay2[s] = decay[s] * Vector512.Create(FastExp.Log2E);
            h0[s] = initialState is null ? Vector512<float>.Zero : Gather(initialState + (long)first * n + s, n, count, lane);
            adjoint[s] = Vector512<float>.Zero;
            gradA[s] = Vector512<float>.Zero;
        }
        var skip = Gather(d + first, 1, count, lane);

        // Forward again, keeping every h_t of these channels.
        var previous = h0;
        var fused = into.Fused;
        for (var t = 0; t < rows.Tokens; t++)
        {
            var delta = Load(dt + (long)t * inner + first, count, lane);
            delta = fused ? FastExp.Softplus(delta) : delta;
            var drive = delta * Load(rows.X + (long)t * inner + first, count, lane);
            var bt = rows.B + (long)t * rows.BcStride;
            var current = states + (long)t * n;
            for (var s = 0; s < n; s++)
            {
                current[s] = Vector512.FusedMultiplyAdd(FastExp.Pow2(delta * decay2[s]), previous[s], drive * Vector512.Create(bt[s]));
            }
            previous = current;
        }

        // Backward in time with the adjoint state r.
        var gradD = Vector512<float>.Zero;
        for (var t = rows.Tokens - 1; t >= 0; t--)
        {
            var at = (long)t * inner + first;
            var raw = Load(dt + at, count, lane);
            var delta = fused ? FastExp.Softplus(raw) : raw;
            var input = Load(rows.X + at, count, lane);
            var gy = Load(into.GradY + at, count, lane);
            var gated = gy; // ∂L/∂(gated y)
            var sigmoid = Vector512<float>.Zero;
            var z = Vector512<float>.Zero;
            if (fused)
            {
                z = Load(into.Gate + at, count, lane);
                sigmoid = FastExp.Sigmoid(z);
                gy = gated * z * sigmoid;                              // through y · SiLU(z)
            }
            var bt = rows.B + (long)t * rows.BcStride;
            var ct = rows.C + (long)t * rows.BcStride;
            var current = states + (long)t * n;
            var before = t > 0 ? states + (long)(t - 1) * n : h0;
            var tableRow = (long)t * n;
            var sumRb = Vector512<float>.Zero;     // Σ_n r B_t
            var sumDecayTerm = Vector512<float>.Zero; // Σ_n A r e h_{t−1}
            var output = Vector512<float>.Zero;    // Σ_n C_t h_t: y before D·x and the gate (fused only)
            var deltaInput = delta * input;
            for (var s = 0; s < n; s++)
            {
                output = fused ? Vector512.FusedMultiplyAdd(Vector512.Create(ct[s]), current[s], output) : output;
                var bs = Vector512.Create(bt[s]);
                var r = Vector512.FusedMultiplyAdd(gy, Vector512.Create(ct[s]), adjoint[s]);
                var e = FastExp.Pow2(delta * decay2[s]);
                var q = r * e * before[s];                                   // r e h_{t−1}
                sumRb = Vector512.FusedMultiplyAdd(r, bs, sumRb);
                sumDecayTerm = Vector512.FusedMultiplyAdd(decay[s], q, sumDecayTerm);
                gradA[s] = Vector512.FusedMultiplyAdd(delta, q, gradA[s]);
                lanesB[tableRow + s] = Vector512.FusedMultiplyAdd(r, deltaInput, lanesB[tableRow + s]);
                lanesC[tableRow + s] = Vector512.FusedMultiplyAdd(gy, current[s], lanesC[tableRow + s]);
                adjoint[s] = r * e;
            }
            Store(Vector512.FusedMultiplyAdd(skip, gy, delta * sumRb), into.GradX + at, count, lane);
            var gradDelta = Vector512.FusedMultiplyAdd(input, sumRb, sumDecayTerm);
            if (fused)
            {
                // softplus′ = σ(raw); SiLU′(z) = σ(z) (1 + z (1 − σ(z))).
                gradDelta *= FastExp.Sigmoid(raw);
                var y = Vector512.FusedMultiplyAdd(skip, input, output);
                Store(gated * y * sigmoid * (Vector512<float>.One + z * (Vector512<float>.One - sigmoid)), into.GradGate + at, count, lane);
            }
            Store(gradDelta, into.GradDt + at, count, lane);
            gradD = Vector512.FusedMultiplyAdd(gy, input, gradD);
        }
        for (var s = 0; s < n; s++)
        {
            AddScatter(gradA[s], into.GradA + (long)first * n + s, n, count, lane);
        }
        AddScatter(gradD, into.GradD + first, 1, count, lane);
    }

    /// <summary>Adds count lanes into values <paramref name="stride"/> apart.</summary>
    private static void AddScatter(Vector512<float> value, float* target, int stride, int count, float* lane)
    {
        value.Store(lane);
        for (var i = 0; i < count; i++)
        {
            target[(long)i * stride] += lane[i];
        }
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

    /// <summary>Δ given as a [T, dInner] table, or as what goes into its softplus (the fused training scan).</summary>
    internal struct GivenDeltas(float* dt, int inner, bool softplus = false) : IDeltas
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
        public readonly Vector512<float> At(int token)
        {
            var given = Load(dt + (long)token * inner + _first, _count, _lane);
            return softplus ? FastExp.Softplus(given) : given;
        }
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
            decay[s] = (negativeA ? given : -FastExp.Exp(given)) * Vector512.Create(FastExp.Log2E);   // A·log₂e: exp(Δ·A) = 2^(Δ · A·log₂e)
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
                var h0 = Vector512.FusedMultiplyAdd(FastExp.Pow2(delta * decay[s]), h[s], drive * Vector512.Create(bt[s]));
                var h1 = Vector512.FusedMultiplyAdd(FastExp.Pow2(delta * decay[s + 1]), h[s + 1], drive * Vector512.Create(bt[s + 1]));
                h[s] = h0;
                h[s + 1] = h1;
                even = Vector512.FusedMultiplyAdd(h0, Vector512.Create(ct[s]), even);
                odd = Vector512.FusedMultiplyAdd(h1, Vector512.Create(ct[s + 1]), odd);
            }
            if (pairs < n)
            {
                var last = Vector512.FusedMultiplyAdd(FastExp.Pow2(delta * decay[pairs]), h[pairs], drive * Vector512.Create(bt[pairs]));
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
