using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using static RecurFormer.Model.Kernels.SelectiveScan;

namespace RecurFormer.Model.Kernels;

/// <summary>
/// One sequence's prefill through a Mamba mixer on the CPU, from the in_proj output x to y = scan(...) + D ⊙ xc
/// (before the SiLU gate and out_proj): the causal depthwise convolution and SiLU, x_proj (Δ rank, B, C), Δ =
/// softplus(dt_proj), and the selective scan, in one hand-off to the kernel threads instead of a dozen libtorch
/// operations per layer. Channels are split across threads in blocks of 16 (one vector); x_proj, which mixes all
/// channels, splits its output rows. The conv and SSM state rows of the sequence's slot are read as the starting
/// state and left holding the state after the last token.
/// </summary>
internal static unsafe class MambaPrefillKernel
{
    /// <summary>The mixer's float32 parameters, and its x_proj as a matrix-vector kernel.</summary>
    public readonly struct Parameters(float* convWeight, float* convBias, MatVec xProj, float* dtWeight, float* dtBias, float* aLog, float* d, int inner, int kernel, int rank, int state)
    {
        public readonly float* ConvWeight = convWeight, ConvBias = convBias, DtWeight = dtWeight, DtBias = dtBias, ALog = aLog, D = d;
        public readonly MatVec XProj = xProj;
        public readonly int Inner = inner, Kernel = kernel, Rank = rank, State = state;
        public int Selective => Rank + 2 * State;
    }

    /// <param name="x">[tokens, Inner] float32: the x half of in_proj's output.</param>
    /// <param name="convState">[Inner, Kernel − 1] of the slot: the last inputs, oldest first.</param>
    /// <param name="ssmState">[Inner, State] of the slot.</param>
    /// <param name="xc">[tokens, Inner] scratch: the convolved input.</param>
    /// <param name="selective">[tokens, Rank + 2·State] scratch: x_proj's output.</param>
    /// <param name="y">[tokens, Inner] output.</param>
    public static void Run(KernelThreads threads, Parameters p, int tokens, float* x, float* convState, float* ssmState, float* xc, float* selective, float* y)
    {
        var weights = TensorMemory.Allocate<float>((long)threads.Count * p.Rank * Lanes); // per thread: dt_proj of 16 channels, transposed
        try
        {
            Run(threads, p, tokens, x, convState, ssmState, xc, selective, y, weights);
        }
        finally
        {
            TensorMemory.Free(weights);
        }
    }

    private static void Run(KernelThreads threads, Parameters p, int tokens, float* x, float* convState, float* ssmState, float* xc, float* selective, float* y, float* weights)
    {
        threads.Run(thread =>
        {
            var (start, end) = threads.Share(thread, p.Inner, Lanes);
            for (var first = start; first < end; first += Lanes)
            {
                Convolve(p, tokens, x, convState, xc, first, Math.Min(Lanes, end - first));
            }
            threads.Barrier();
            var (from, to) = threads.Share(thread, p.Selective, 4);
            p.XProj.Compute(new KernelInput(xc, tokens, p.Inner, p.Inner, reordered: false), selective, p.Selective, from, to);
            threads.Barrier();
            var rows = new ScanRows(xc, selective + p.Rank, selective + p.Rank + p.State, p.Selective, y, tokens, p.Inner, p.State);
            var deltas = new ProjectedDeltas(selective, p.Selective, p.DtWeight, p.DtBias, p.Rank, (Vector512<float>*)(weights + (long)thread * p.Rank * Lanes));
            for (var first = start; first < end; first += Lanes)
            {
                Channels(rows, deltas, negativeA: false, p.ALog, p.D, ssmState, first, Math.Min(Lanes, end - first));
            }
        });
    }

    /// <summary>xc[t] = SiLU(bias + Σ_k w_k · the last Kernel inputs up to t), for up to 16 channels from <paramref name="first"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Convolve(in Parameters p, int tokens, float* x, float* convState, float* xc, int first, int count)
    {
        int kernel = p.Kernel, held = kernel - 1, inner = p.Inner;
        var weights = stackalloc Vector512<float>[kernel];
        var window = stackalloc Vector512<float>[kernel]; // the state's inputs, then the token's
        var lane = stackalloc float[Lanes];
        for (var k = 0; k < kernel; k++)
        {
            weights[k] = Gather(p.ConvWeight + (long)first * kernel + k, kernel, count, lane);
        }
        for (var k = 0; k < held; k++)
        {
            window[k] = Gather(convState + (long)first * held + k, held, count, lane);
        }
        var bias = p.ConvBias is null ? Vector512<float>.Zero : Gather(p.ConvBias + first, 1, count, lane);
        for (var t = 0; t < tokens; t++)
        {
            window[held] = Load(x + (long)t * inner + first, count, lane);
            var sum = bias;
            for (var k = 0; k < kernel; k++)
            {
                sum = Vector512.FusedMultiplyAdd(weights[k], window[k], sum);
            }
            Store(FastExp.Silu(sum), xc + (long)t * inner + first, count, lane);
            for (var k = 0; k < held; k++)
            {
                window[k] = window[k + 1];
            }
        }
        for (var k = 0; k < held; k++)
        {
            Scatter(window[k], convState + (long)first * held + k, held, count, lane);
        }
    }

    /// <summary>Δ_t = softplus(dt_proj · (x_proj's first rank outputs at t) + bias), 16 channels at a time.</summary>
    /// <param name="weights">The thread's scratch for the weights of 16 channels, transposed: one vector per rank index.</param>
    private struct ProjectedDeltas(float* selective, int stride, float* dtWeight, float* dtBias, int rank, Vector512<float>* weights) : IDeltas
    {
        private Vector512<float> _bias;

        public void Start(int first, int count, float* lane)
        {
            for (var r = 0; r < rank; r++)
            {
                weights[r] = Gather(dtWeight + (long)first * rank + r, rank, count, lane);
            }
            _bias = Gather(dtBias + first, 1, count, lane);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public readonly Vector512<float> At(int token)
        {
            var parameters = selective + (long)token * stride;
            var delta = _bias;
            for (var r = 0; r < rank; r++)
            {
                delta = Vector512.FusedMultiplyAdd(weights[r], Vector512.Create(parameters[r]), delta);
            }
            return FastExp.Softplus(delta);
        }
    }
}
