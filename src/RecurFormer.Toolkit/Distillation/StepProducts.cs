using RecurFormer.Model.Configuration;
using static TorchSharp.torch;

namespace RecurFormer.Toolkit.Distillation;

/// <summary>Which product of a linear layer y = x Wᵀ a step computes: the forward, or one of its two gradients.</summary>
public enum ProductPass
{
    /// <summary>y = x Wᵀ: [tokens × in] · [in × out].</summary>
    Forward,

    /// <summary>∂x = ∂y W: [tokens × out] · [out × in]; only when x depends on something that trains.</summary>
    InputGradient,

    /// <summary>∂W = ∂yᵀ x: [out × tokens] · [tokens × in]; only when W trains.</summary>
    WeightGradient,
}

/// <summary>One matrix product of a training step: [Rows × Inner] · [Inner × Columns] in <see cref="DType"/>.</summary>
public sealed record StepProduct(string Part, ProductPass Pass, long Rows, long Inner, long Columns, ScalarType DType)
{
    public double Flops => 2.0 * Rows * Inner * Columns;
}

/// <summary>
/// The matrix products one worker's share of a distillation step computes, read off the student's shapes and the run's
/// options the way <see cref="Distiller"/> runs them (which dtype each product takes, where autograd needs an input
/// or a weight gradient). What the list leaves out: attention's score and value products (a few percent at these
/// lengths, computed by kernels in the teacher), the scan, the convolution and every element-wise pass. So the time
/// of these products alone is a ceiling on a step's speed: the step cannot be faster than its products at libtorch's
/// own rate, whatever else is fused or removed (<c>recurformer bench-products</c> times them).
/// </summary>
public static class StepProducts
{
    /// <summary>
    /// Stage 1 over <paramref name="tokens"/> tokens: the teacher's forward up to the last replaced layer's head outputs,
    /// the targets' and the error's products by the Gram matrix of o_proj's columns, and each mixer's forward and
    /// backward (its input, the teacher's, needs no gradient).
    /// </summary>
    public static IReadOnlyList<StepProduct> Stage1(TransformerConfig student, long tokens, ScalarType teacherDType, ScalarType matmul)
    {
        var products = new List<StepProduct>();
        var mixers = MixerLayers(student);
        var last = mixers[^1].Layer;
        for (var layer = 0; layer <= last; layer++)
        {
            // The forward stops at the last replaced layer's head outputs: its o_proj and MLP feed only layers that do not run.
            TeacherLayer(products, student, tokens, teacherDType, whole: layer < last);
        }
        foreach (var (_, shape) in mixers)
        {
            // The targets' energy and the error as o_proj passes them on, each as one product by the columns' Gram matrix
            // (ErrorWeight): the error's gradient is that product, doubled. (A layer whose rounded Gram matrix is not
            // positive semi-definite takes a Cholesky factor instead, and a second product for the gradient: it depends
            // on the weights, not the shapes, and is not counted here.)
            products.Add(new("stage-1 targets through o_proj", ProductPass.Forward, tokens, shape.OutputSize, shape.OutputSize, matmul));
            Linear(products, "mixer in_proj", tokens, shape.InputSize, 2 * shape.InnerSize, matmul, inputGradient: false, weightGradient: true);
            MixerInner(products, shape, tokens, matmul, inputGradient: true, weightGradient: true);
            products.Add(new("stage-1 error through o_proj", ProductPass.Forward, tokens, shape.OutputSize, shape.OutputSize, matmul));
        }
        return products;
    }

    /// <summary>
    /// Stage 2 over <paramref name="tokens"/> tokens: the student's forward and backward (every product in
    /// <paramref name="matmul"/>, as its low-precision copy runs), and the teacher's forward unless its top-k targets come
    /// from the cache.
    /// </summary>
    public static IReadOnlyList<StepProduct> Stage2(TransformerConfig student, long tokens, ScalarType teacherDType, ScalarType matmul,
        TrainedParts trained, bool teacherCached)
    {
        var products = new List<StepProduct>();
        var all = trained.HasFlag(TrainedParts.All);
        var attentionTrains = all || trained.HasFlag(TrainedParts.Attention);
        var mambaTrains = attentionTrains || trained.HasFlag(TrainedParts.Mamba);
        var outputTrains = attentionTrains || trained.HasFlag(TrainedParts.OutputProjection);
        var hidden = student.HiddenSize;
        // Whether the residual stream entering a layer depends on something that trains (then every product reading it
        // needs its input gradient); with the embedding trained (all), from layer 0.
        var stream = all;
        for (var layer = 0; layer < student.NumHiddenLayers; layer++)
        {
            var heads = student.Heads(layer);
            var attending = heads.AttendingGroups.Length;
            if (attending > 0)
            {
                var rows = (attending * heads.GroupSize + 2 * attending) * heads.HeadDim;
                Linear(products, "student qkv_proj", tokens, hidden, rows, matmul, stream, attentionTrains);
            }
            var shape = student.MixerShape(layer);
            if (shape is not null)
            {
                Linear(products, "mixer in_proj", tokens, hidden, 2 * shape.InnerSize, matmul, stream, mambaTrains);
                MixerInner(products, shape, tokens, matmul, stream || mambaTrains, mambaTrains);
            }
            var attentionOutput = stream || attentionTrains || (shape is not null && mambaTrains);
            Linear(products, "student o_proj", tokens, student.NumAttentionHeads * student.HeadDim, hidden, matmul, attentionOutput, outputTrains);
            stream = attentionOutput || outputTrains;
            Linear(products, "student MLP", tokens, hidden, 2 * student.IntermediateSize, matmul, stream, all);
            Linear(products, "student MLP", tokens, student.IntermediateSize, hidden, matmul, stream, all);
        }
        Linear(products, "student lm_head", tokens, hidden, student.VocabSize, matmul, inputGradient: stream, weightGradient: all);
        if (!teacherCached)
        {
            for (var layer = 0; layer < student.NumHiddenLayers; layer++)
            {
                TeacherLayer(products, student, tokens, teacherDType, whole: true);
            }
            products.Add(new("teacher", ProductPass.Forward, tokens, hidden, student.VocabSize, teacherDType));
        }
        return products;
    }

    /// <summary>The layers with a mixer, in order, and its shape.</summary>
    private static List<(int Layer, MambaMixerShape Shape)> MixerLayers(TransformerConfig student)
    {
        var layers = Enumerable.Range(0, student.NumHiddenLayers)
            .Select(l => (Layer: l, Shape: student.MixerShape(l)))
            .Where(l => l.Shape is not null)
            .Select(l => (l.Layer, l.Shape!))
            .ToList();
        return layers.Count > 0 ? layers : throw new ArgumentException("the student has no Mamba mixer");
    }

    /// <summary>One layer of the teacher (every head attends), forward only.</summary>
    /// <param name="whole">false: the layer a stage-1 teacher stops at, its heads only (qkv_proj; no o_proj, no MLP).</param>
    private static void TeacherLayer(List<StepProduct> products, TransformerConfig config, long tokens, ScalarType dtype, bool whole)
    {
        var hidden = config.HiddenSize;
        var attention = config.NumAttentionHeads * config.HeadDim;
        products.Add(new("teacher", ProductPass.Forward, tokens, hidden, attention + 2 * config.NumKeyValueHeads * config.HeadDim, dtype));
        if (whole)
        {
            products.Add(new("teacher", ProductPass.Forward, tokens, attention, hidden, dtype));
            products.Add(new("teacher", ProductPass.Forward, tokens, hidden, 2 * config.IntermediateSize, dtype));
            products.Add(new("teacher", ProductPass.Forward, tokens, config.IntermediateSize, hidden, dtype));
        }
    }

    /// <summary>
    /// A mixer after in_proj: x_proj, dt_proj and out_proj, in <paramref name="matmul"/> (x_proj's and dt_proj's since
    /// the seventh round, as Mamba trains them under autocast). Their inputs derive from in_proj's output.
    /// </summary>
    private static void MixerInner(List<StepProduct> products, MambaMixerShape shape, long tokens, ScalarType matmul, bool inputGradient, bool weightGradient)
    {
        Linear(products, "mixer x_proj, dt_proj", tokens, shape.InnerSize, shape.TimeStepRank + 2 * shape.StateSize, matmul, inputGradient, weightGradient);
        Linear(products, "mixer x_proj, dt_proj", tokens, shape.TimeStepRank, shape.InnerSize, matmul, inputGradient, weightGradient);
        Linear(products, "mixer out_proj", tokens, shape.InnerSize, shape.OutputSize, matmul, inputGradient, weightGradient);
    }

    /// <summary>y = x Wᵀ over <paramref name="tokens"/> rows, x [tokens × <paramref name="input"/>], and the gradients autograd takes of it.</summary>
    private static void Linear(List<StepProduct> products, string part, long tokens, int input, int output, ScalarType dtype, bool inputGradient, bool weightGradient)
    {
        products.Add(new(part, ProductPass.Forward, tokens, input, output, dtype));
        if (inputGradient)
        {
            products.Add(new(part, ProductPass.InputGradient, tokens, output, input, dtype));
        }
        if (weightGradient)
        {
            products.Add(new(part, ProductPass.WeightGradient, output, tokens, input, dtype));
        }
    }
}
