using RecurFormer.Model.Kernels;
using static TorchSharp.torch;

namespace RecurFormer.Model.Tests;

/// <summary>
/// The stage-2 loss kernels against the same losses in libtorch operations (as <c>Distiller</c> writes them where the
/// kernels do not run): per-position KL and CE, and the gradient with respect to the student's logits under an
/// arbitrary upstream gradient, within 1e-5 of the largest value.
/// </summary>
public sealed class DistillationLossTests
{
    /// <summary>A vocabulary that is not a multiple of 16 takes the scalar tail; −1 targets have no CE.</summary>
    [Theory]
    [InlineData(9, 1003, 1)]
    [InlineData(33, 256, 2)]
    public void The_full_divergence_equals_libtorch(int rows, int vocabulary, int threadCount)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(41);
        var (student, teacher, targets, upstream) = Inputs(rows, vocabulary, generator);

        var expected = student.clone().requires_grad_(true);
        var studentLog = nn.functional.log_softmax(expected, 1);
        var teacherLog = nn.functional.log_softmax(teacher, 1);
        var kl = (teacherLog.exp() * (teacherLog - studentLog)).sum(1);
        var reference = stack([kl, Ce(studentLog, targets)], 1);
        (reference * upstream).sum().backward();

        using var threads = new KernelThreads(threadCount);
        var actual = student.clone().requires_grad_(true);
        var losses = DistillationLossFunction.Full(actual, teacher, targets, threads);
        (losses * upstream).sum().backward();

        AssertClose("(KL, CE)", reference, losses);
        AssertClose("∂z", expected.grad!, actual.grad!);
    }

    /// <summary>
    /// The top-k form, with one row whose student puts all its mass on the teacher's top token, so that its "rest"
    /// bucket is clamped (and passes no gradient through the clamp, as libtorch's clamp_min).
    /// </summary>
    [Theory]
    [InlineData(11, 1003, 16, 1)]
    [InlineData(20, 512, 64, 2)]
    public void The_top_k_divergence_equals_libtorch(int rows, int vocabulary, int k, int threadCount)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(43);
        var (student, teacher, targets, upstream) = Inputs(rows, vocabulary, generator);
        var (top, ids) = nn.functional.log_softmax(teacher, 1).topk(k, dim: 1);
        student[0, ids[0, 0].item<long>()] += 100;                            // row 0: all its mass on one top-k token

        var expected = student.clone().requires_grad_(true);
        var studentLog = nn.functional.log_softmax(expected, 1);
        var studentTop = studentLog.gather(1, ids);
        var topProbabilities = top.exp();
        var teacherRest = (1 - topProbabilities.sum(1)).clamp_min(1e-8);
        var studentRest = (1 - studentTop.exp().sum(1)).clamp_min(1e-8);
        var kl = (topProbabilities * (top - studentTop)).sum(1) + teacherRest * (teacherRest.log() - studentRest.log());
        var reference = stack([kl, Ce(studentLog, targets)], 1);
        (reference * upstream).sum().backward();
        Assert.True((1 - studentTop[0].exp().sum()).item<float>() < 1e-8, "row 0's rest is not clamped");

        using var threads = new KernelThreads(threadCount);
        var actual = student.clone().requires_grad_(true);
        var losses = DistillationLossFunction.TopK(actual, top, ids, targets, threads);
        (losses * upstream).sum().backward();

        AssertClose("(KL, CE)", reference, losses);
        AssertClose("∂z", expected.grad!, actual.grad!);
    }

    [Fact]
    public void Bad_targets_and_shapes_are_refused()
    {
        using var scope = NewDisposeScope();
        var student = zeros(3, 20);
        Assert.Throws<ArgumentException>(() => DistillationLossFunction.Full(student, zeros(3, 20), [1, 2], KernelThreads.Single));
        Assert.Throws<ArgumentException>(() => DistillationLossFunction.Full(student, zeros(3, 20), [1, 2, 20], KernelThreads.Single));
        Assert.Throws<ArgumentException>(() => DistillationLossFunction.Full(student, zeros(3, 21), [1, 2, -1], KernelThreads.Single));
        Assert.Throws<ArgumentException>(() => DistillationLossFunction.Full(student.to_type(ScalarType.Float16), zeros(3, 20), [1, 2, -1], KernelThreads.Single));
        Assert.Throws<ArgumentException>(() => DistillationLossFunction.Full(student, zeros(3, 20).to_type(ScalarType.Float16), [1, 2, -1], KernelThreads.Single));
    }

    /// <summary>
    /// bfloat16 logits (as a bfloat16 LM head computes them), the student's and the teacher's, whole and top-k: the
    /// losses of the same values in float32 to the bit, and their float32 gradient rounded to bfloat16 to the bit (what
    /// libtorch's conversion of the gradient back to bfloat16 gives).
    /// </summary>
    [Theory]
    [InlineData(9, 1003, 0, 1)]
    [InlineData(20, 512, 16, 2)]
    public void Bfloat16_logits_give_the_float32_losses_and_the_rounded_gradient(int rows, int vocabulary, int k, int threadCount)
    {
        using var scope = NewDisposeScope();
        using var generator = new Generator(47);
        var (student, teacher, targets, upstream) = Inputs(rows, vocabulary, generator);
        var (student16, teacher16) = (student.to_type(ScalarType.BFloat16), teacher.to_type(ScalarType.BFloat16));
        var (student32, teacher32) = (student16.to_type(ScalarType.Float32), teacher16.to_type(ScalarType.Float32));
        var (top, ids) = nn.functional.log_softmax(teacher32, 1).topk(Math.Max(k, 1), dim: 1);
        using var threads = new KernelThreads(threadCount);
        Tensor Losses(Tensor logits, Tensor teacherLogits) => k == 0
            ? DistillationLossFunction.Full(logits, teacherLogits, targets, threads)
            : DistillationLossFunction.TopK(logits, top, ids, targets, threads);

        var expected = student32.clone().requires_grad_(true);
        var reference = Losses(expected, teacher32);
        (reference * upstream).sum().backward();
        var actual = student16.clone().requires_grad_(true);
        var losses = Losses(actual, teacher16);
        (losses * upstream).sum().backward();

        Assert.Equal(ScalarType.BFloat16, actual.grad!.dtype);
        Assert.True(reference.eq(losses).all().item<bool>(), "the losses of bfloat16 logits differ from those of their float32 values");
        Assert.True(expected.grad!.to_type(ScalarType.BFloat16).eq(actual.grad!).all().item<bool>(), "∂z is not the float32 gradient rounded to bfloat16");
    }

    /// <summary>Student logits of spread ±8, a sharper teacher (±12), a target per row but every fourth, an upstream gradient.</summary>
    private static (Tensor Student, Tensor Teacher, long[] Targets, Tensor Upstream) Inputs(int rows, int vocabulary, Generator generator)
    {
        var student = randn([rows, vocabulary], generator: generator) * 8;
        var teacher = randn([rows, vocabulary], generator: generator) * 12;
        var picks = randint(vocabulary, [rows], generator: generator).data<long>().ToArray();
        var targets = picks.Select((t, r) => r % 4 == 3 ? -1 : t).ToArray();
        return (student, teacher, targets, randn([rows, 2], generator: generator));
    }

    /// <summary>−log q at each row's target, 0 where the target is −1.</summary>
    private static Tensor Ce(Tensor studentLog, long[] targets)
    {
        var rows = Enumerable.Range(0, targets.Length).Where(r => targets[r] >= 0).Select(r => (long)r).ToArray();
        var picked = -studentLog.index_select(0, tensor(rows)).gather(1, tensor(rows.Select(r => targets[r]).ToArray()).unsqueeze(1)).squeeze(1);
        return zeros(targets.Length).index_copy(0, tensor(rows), picked);
    }

    private static void AssertClose(string what, Tensor expected, Tensor actual)
    {
        var scale = expected.abs().max().item<float>();
        var difference = (expected - actual).abs().max().item<float>() / scale;
        Assert.True(difference < 1e-5, $"{what}: max |Δ| / max |expected| = {difference}");
    }
}
