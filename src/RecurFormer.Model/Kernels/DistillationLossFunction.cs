using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace RecurFormer.Model.Kernels;

/// <summary>
/// Stage 2's per-position losses from the student's logits, forward and backward in one pass over each row, on the
/// CPU: KL(teacher ‖ student) and the next-token cross-entropy, as [T, 2] (KL, CE). Why not libtorch's log_softmax,
/// gather and sums: over a vocabulary of 8,192 each of those is a pass over a [T, V] float32 tensor, and autograd's
/// backward adds dense zero-filled gradients for the gather and the row selection before log_softmax's own: about
/// twenty passes and as many 8 MB allocations per worker step, 5–10% of a stage-2 step (docs/conversion.md,
/// sixteenth round). Here the forward reads each row twice (its maximum, then its exponentials) and keeps the
/// log-sum-exps of each row; the backward writes ∂L/∂z = g_KL · (q − p) + g_CE · (q − onehot) in one pass, q the student's
/// and p the teacher's probabilities.
/// <para>
/// The teacher comes as its whole logits [T, V], or as its top-k log-probabilities and ids [T, k] (the teacher cache):
/// the KL is then over k + 1 buckets, the top-k tokens and the rest of the vocabulary as one, each bucket's mass
/// clamped below at 1e-8 as <c>Distiller</c>'s libtorch form clamps it.
/// </para>
/// <para>
/// Logits come in float32 or bfloat16 (as a bfloat16 LM head computes them): a bfloat16 row is widened into a
/// thread's float32 scratch row, which stays in cache, instead of the whole [T, V] going to float32 and its gradient
/// back through memory; the gradient is rounded to bfloat16 as libtorch's conversion rounds it.
/// </para>
/// </summary>
public sealed unsafe class DistillationLossFunction : SingleTensorFunction<DistillationLossFunction>
{
    /// <summary>The least mass of the "rest of the vocabulary" bucket (as the libtorch form's clamp_min).</summary>
    public const float RestFloor = 1e-8f;

    public override string Name => "DistillationLoss";

    /// <summary>Whether the kernels run for <paramref name="logits"/>: float32 or bfloat16 [T, V] on the CPU, with 512-bit vectors in hardware.</summary>
    public static bool Supports(Tensor logits) =>
        Kernel.IsAccelerated && logits.device_type == DeviceType.CPU && logits.dim() == 2 && logits.dtype is ScalarType.Float32 or ScalarType.BFloat16;

    /// <summary>
    /// (KL, CE) per position [T, 2] of student logits [T, V] against the teacher's logits [T, V] (not differentiated).
    /// <paramref name="targets"/>: each position's next token, −1 where it has none (its CE is 0).
    /// </summary>
    public static Tensor Full(Tensor studentLogits, Tensor teacherLogits, long[] targets, KernelThreads threads)
    {
        Check(studentLogits, targets);
        if (!teacherLogits.shape.SequenceEqual(studentLogits.shape) || teacherLogits.dtype is not (ScalarType.Float32 or ScalarType.BFloat16))
        {
            throw new ArgumentException("the teacher's logits must be float32 or bfloat16 of the student's shape");
        }
        return apply(studentLogits, new Teacher(teacherLogits.detach().contiguous(), null, null), targets, threads);
    }

    /// <summary>
    /// As <see cref="Full"/>, against the teacher's top-k log-probabilities [T, k] (float32) and their token ids [T, k]
    /// (int64, distinct within a row).
    /// </summary>
    public static Tensor TopK(Tensor studentLogits, Tensor teacherLogProbs, Tensor teacherIds, long[] targets, KernelThreads threads)
    {
        Check(studentLogits, targets);
        if (teacherLogProbs.dim() != 2 || teacherLogProbs.shape[0] != studentLogits.shape[0] || !teacherIds.shape.SequenceEqual(teacherLogProbs.shape)
            || teacherLogProbs.dtype != ScalarType.Float32 || teacherIds.dtype != ScalarType.Int64)
        {
            throw new ArgumentException("the teacher's top-k must be float32 log-probabilities and int64 ids [T, k]");
        }
        return apply(studentLogits, new Teacher(null, teacherLogProbs.detach().contiguous(), teacherIds.contiguous()), targets, threads);
    }

    private static void Check(Tensor studentLogits, long[] targets)
    {
        if (!Supports(studentLogits))
        {
            throw new ArgumentException("the loss kernels take float32 or bfloat16 logits [T, V] on the CPU");
        }
        if (targets.Length != studentLogits.shape[0] || targets.Any(t => t < -1 || t >= studentLogits.shape[1]))
        {
            throw new ArgumentException("one target per position, a token id or −1");
        }
    }

    /// <summary>The teacher as the kernels read it: whole logits, or top-k log-probabilities and ids.</summary>
    private sealed record Teacher(Tensor? Logits, Tensor? TopLogProbs, Tensor? TopIds)
    {
        public Rows RowsOf(int vocabulary) => TopLogProbs is { } top
            ? new(default, TensorMemory.Pointer<float>(top), TensorMemory.Pointer<long>(TopIds!), (int)top.shape[1])
            : new(LogitRows.Of(Logits!), null, null, 0);
    }

    /// <summary>The teacher's rows in memory: whole logits [T, V], or top-k log-probabilities and ids [T, K].</summary>
    private readonly struct Rows(LogitRows logits, float* top, long* ids, int k)
    {
        private readonly float* _top = top;
        private readonly long* _ids = ids;
        public readonly LogitRows Logits = logits;
        public readonly int K = k;
        public bool Whole => _top == null;
        public float* Top(int row) => _top + (long)row * K;
        public long* Ids(int row) => _ids + (long)row * K;
    }

    /// <summary>Rows of logits [T, V] in float32 or bfloat16, read as float32.</summary>
    private readonly struct LogitRows(byte* data, bool bf16, int vocabulary)
    {
        private readonly byte* _data = data;
        public readonly bool Bf16 = bf16;
        public readonly int Vocabulary = vocabulary;

        public static LogitRows Of(Tensor logits) =>
            new(TensorMemory.Pointer<byte>(logits), logits.dtype == ScalarType.BFloat16, (int)logits.shape[1]);

        /// <summary>Row <paramref name="row"/> as float32: in place, or widened into <paramref name="scratch"/>.</summary>
        public float* Read(int row, float* scratch)
        {
            if (!Bf16)
            {
                return (float*)_data + (long)row * Vocabulary;
            }
            Kernels.Bf16.ToFloat((ushort*)_data + (long)row * Vocabulary, scratch, Vocabulary);
            return scratch;
        }

        /// <summary>Where to compute row <paramref name="row"/> in float32: in place, or in <paramref name="scratch"/> (then <see cref="Write"/>).</summary>
        public float* Target(int row, float* scratch) => Bf16 ? scratch : (float*)_data + (long)row * Vocabulary;

        /// <summary>Row <paramref name="row"/> from <see cref="Target"/>'s scratch, rounded to bfloat16 (nothing to do in float32).</summary>
        public void Write(int row, float* scratch)
        {
            if (Bf16)
            {
                Kernels.Bf16.FromFloat(scratch, (ushort*)_data + (long)row * Vocabulary, Vocabulary);
            }
        }
    }

    /// <summary>A kernel thread's float32 rows of the vocabulary's width (three: student, teacher, gradient), freed on dispose.</summary>
    private readonly struct Scratch : IDisposable
    {
        private readonly float* _memory;
        private readonly int _vocabulary;

        public Scratch(int vocabulary)
        {
            _vocabulary = vocabulary;
            _memory = (float*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc((nuint)(3L * vocabulary * sizeof(float)), 64);
        }

        public float* Student => _memory;
        public float* Teacher => _memory + _vocabulary;
        public float* Gradient => _memory + 2L * _vocabulary;

        public void Dispose() => System.Runtime.InteropServices.NativeMemory.AlignedFree(_memory);
    }

    public override Tensor forward(AutogradContext ctx, params object[] vars)
    {
        var logits = ((Tensor)vars[0]).contiguous();
        var (teacher, targets, threads) = ((Teacher)vars[1], (long[])vars[2], (KernelThreads)vars[3]);
        var (rows, vocabulary) = ((int)logits.shape[0], (int)logits.shape[1]);
        var losses = zeros(rows, 2);
        var logSumExps = new float[2 * rows];                   // the student's, then the teacher's (whole logits only)
        var z = LogitRows.Of(logits);
        var output = TensorMemory.Pointer<float>(losses);
        var teacherRows = teacher.RowsOf(vocabulary);
        threads.Run(thread =>
        {
            var (start, end) = threads.Share(thread, rows);
            using var scratch = new Scratch(vocabulary);
            for (var r = start; r < end; r++)
            {
                var row = z.Read(r, scratch.Student);
                float lse;
                if (teacherRows.Whole)
                {
                    (lse, logSumExps[2 * r + 1], output[2 * r]) = FullDivergence(teacherRows.Logits.Read(r, scratch.Teacher), row, vocabulary);
                }
                else
                {
                    lse = LogSumExp(row, vocabulary);
                    output[2 * r] = TopKDivergence(teacherRows.Top(r), teacherRows.Ids(r), row, lse, teacherRows.K, out _);
                }
                logSumExps[2 * r] = lse;
                output[2 * r + 1] = targets[r] < 0 ? 0 : lse - row[targets[r]];
            }
        });
        ctx.save_for_backward([logits]);
        ctx.save_data("teacher", teacher);
        ctx.save_data("targets", targets);
        ctx.save_data("threads", threads);
        ctx.save_data("lse", logSumExps);
        return losses;
    }

    public override List<Tensor> backward(AutogradContext ctx, Tensor grad_output)
    {
        var logits = ctx.get_saved_variables()[0];
        var teacher = (Teacher)ctx.get_data("teacher");
        var targets = (long[])ctx.get_data("targets");
        var threads = (KernelThreads)ctx.get_data("threads");
        var logSumExps = (float[])ctx.get_data("lse");
        var (rows, vocabulary) = ((int)logits.shape[0], (int)logits.shape[1]);
        var upstream = grad_output.to_type(ScalarType.Float32).contiguous();
        var gradient = empty_like(logits);                      // the logits' dtype, as autograd expects
        var z = LogitRows.Of(logits);
        var g = TensorMemory.Pointer<float>(upstream);
        var dz = LogitRows.Of(gradient);
        var teacherRows = teacher.RowsOf(vocabulary);
        threads.Run(thread =>
        {
            var (start, end) = threads.Share(thread, rows);
            using var scratch = new Scratch(vocabulary);
            for (var r = start; r < end; r++)
            {
                var row = z.Read(r, scratch.Student);
                var into = dz.Target(r, scratch.Gradient);
                var lse = logSumExps[2 * r];
                var (gKl, gCe) = (g[2 * r], targets[r] < 0 ? 0f : g[2 * r + 1]);
                if (teacherRows.Whole)
                {
                    FullGradient(teacherRows.Logits.Read(r, scratch.Teacher), row, lse, logSumExps[2 * r + 1], gKl, gCe, into, vocabulary);
                }
                else
                {
                    TopKGradient(teacherRows.Top(r), teacherRows.Ids(r), row, lse, teacherRows.K, gKl, gCe, into, vocabulary);
                }
                if (gCe != 0)
                {
                    into[targets[r]] -= gCe;
                }
                dz.Write(r, scratch.Gradient);
            }
        });
        return [gradient, null!, null!, null!];
    }

    /// <summary>log Σ e^z over a row: its maximum, then the sum of e^(z − max).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static float LogSumExp(float* row, int n)
    {
        var max = Kernel.Max(row, n);
        var m = Vector512.Create(max);
        var sums = Vector512<float>.Zero;
        var i = 0;
        for (; i + 16 <= n; i += 16)
        {
            sums += FastExp.Exp(Vector512.Load(row + i) - m);
        }
        var sum = Vector512.Sum(sums);
        for (; i < n; i++)
        {
            sum += MathF.Exp(row[i] - max);
        }
        return max + MathF.Log(sum);
    }

    /// <summary>
    /// (LSE(z), LSE(y), Σ_j p_j (log p_j − log q_j)) with log p = y − LSE(y), log q = z − LSE(z), in two passes over the
    /// rows: their maxima, then their exponentials. The KL as (1 / S) Σ_j e^(y_j − max y) (y_j − z_j) + LSE(z) − LSE(y),
    /// S = Σ_j e^(y_j − max y) (Σ_j p_j = 1).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static (float StudentLse, float TeacherLse, float Divergence) FullDivergence(float* teacher, float* student, int n)
    {
        var (teacherMax, studentMax) = (Kernel.Max(teacher, n), Kernel.Max(student, n));
        var (tm, sm) = (Vector512.Create(teacherMax), Vector512.Create(studentMax));
        var (teacherSums, studentSums, weighted) = (Vector512<float>.Zero, Vector512<float>.Zero, Vector512<float>.Zero);
        var i = 0;
        for (; i + 16 <= n; i += 16)
        {
            var (y, z) = (Vector512.Load(teacher + i), Vector512.Load(student + i));
            var e = FastExp.Exp(y - tm);
            teacherSums += e;
            weighted += e * (y - z);
            studentSums += FastExp.Exp(z - sm);
        }
        var (teacherSum, studentSum, sum) = (Vector512.Sum(teacherSums), Vector512.Sum(studentSums), Vector512.Sum(weighted));
        for (; i < n; i++)
        {
            var e = MathF.Exp(teacher[i] - teacherMax);
            teacherSum += e;
            sum += e * (teacher[i] - student[i]);
            studentSum += MathF.Exp(student[i] - studentMax);
        }
        var (studentLse, teacherLse) = (studentMax + MathF.Log(studentSum), teacherMax + MathF.Log(teacherSum));
        return (studentLse, teacherLse, sum / teacherSum + studentLse - teacherLse);
    }

    /// <summary>∂z = g_KL · (q − p) + g_CE · q (the CE's −g_CE at the target is the caller's).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void FullGradient(float* teacher, float* student, float studentLse, float teacherLse, float gKl, float gCe, float* into, int n)
    {
        var (tl, sl, gk, gq) = (Vector512.Create(teacherLse), Vector512.Create(studentLse), Vector512.Create(gKl), Vector512.Create(gKl + gCe));
        var i = 0;
        for (; i + 16 <= n; i += 16)
        {
            var q = FastExp.Exp(Vector512.Load(student + i) - sl);
            var p = FastExp.Exp(Vector512.Load(teacher + i) - tl);
            (gq * q - gk * p).Store(into + i);
        }
        for (; i < n; i++)
        {
            into[i] = (gKl + gCe) * MathF.Exp(student[i] - studentLse) - gKl * MathF.Exp(teacher[i] - teacherLse);
        }
    }

    /// <summary>
    /// The KL over the teacher's top-k tokens and one bucket for the rest: Σ_i P_i (t_i − s_i) + R_t (log R_t − log R_s),
    /// s_i the student's log-probability of id i, R the rest's mass (clamped at <see cref="RestFloor"/>).
    /// <paramref name="studentRest"/>: 1 − Σ e^(s_i), before the clamp.
    /// </summary>
    private static float TopKDivergence(float* top, long* ids, float* student, float studentLse, int k, out float studentRest)
    {
        var (sum, teacherMass, studentMass) = (0f, 0f, 0f);
        for (var i = 0; i < k; i++)
        {
            var s = student[ids[i]] - studentLse;
            var p = MathF.Exp(top[i]);
            sum += p * (top[i] - s);
            teacherMass += p;
            studentMass += MathF.Exp(s);
        }
        var teacherRest = MathF.Max(1 - teacherMass, RestFloor);
        studentRest = 1 - studentMass;
        return sum + teacherRest * (MathF.Log(teacherRest) - MathF.Log(MathF.Max(studentRest, RestFloor)));
    }

    /// <summary>
    /// ∂z_j = g_j − q_j Σg, g the gradient with respect to the student's log-probabilities: at the top-k ids
    /// g_KL · (−P_i + R_t e^(s_i) / R_s), the rest's term only while R_s is above its floor; the CE adds −g_CE at the
    /// target (the caller's) and −g_CE to Σg.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void TopKGradient(float* top, long* ids, float* student, float studentLse, int k, float gKl, float gCe, float* into, int n)
    {
        TopKDivergence(top, ids, student, studentLse, k, out var studentRest);
        var teacherMass = 0f;
        for (var i = 0; i < k; i++)
        {
            teacherMass += MathF.Exp(top[i]);
        }
        var teacherRest = MathF.Max(1 - teacherMass, RestFloor);
        var restFactor = studentRest >= RestFloor ? teacherRest / studentRest : 0f;
        var sparseSum = 0f;
        for (var i = 0; i < k; i++)
        {
            sparseSum += gKl * (restFactor * MathF.Exp(student[ids[i]] - studentLse) - MathF.Exp(top[i]));
        }
        var (sl, scale) = (Vector512.Create(studentLse), Vector512.Create(-(sparseSum - gCe)));
        var j = 0;
        for (; j + 16 <= n; j += 16)
        {
            (scale * FastExp.Exp(Vector512.Load(student + j) - sl)).Store(into + j);
        }
        for (; j < n; j++)
        {
            into[j] = -(sparseSum - gCe) * MathF.Exp(student[j] - studentLse);
        }
        for (var i = 0; i < k; i++)
        {
            into[ids[i]] += gKl * (restFactor * MathF.Exp(student[ids[i]] - studentLse) - MathF.Exp(top[i]));
        }
    }
}
