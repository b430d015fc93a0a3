using RecurFormer.Model.Configuration;
using RecurFormer.Model.Kernels;
using RecurFormer.Model.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace RecurFormer.Toolkit.Distillation;

/// <summary>
/// The function of a <see cref="MambaMixer"/>, recomputed from its parameters for stage 1 of distillation on
/// equal-length sequences: in_proj → causal conv → SiLU → (Δ, B, C) → selective scan → + D·x → SiLU(z) gate → out_proj,
/// all sequences of the batch at once, and stage 1's loss with its gradients computed by hand (<see cref="Stage1Backward"/>).
/// Why by hand: the loss is a squared error of this one function, so its backward is a short, fixed list of products
/// and two kernels (the scan's and the convolution's); through autograd the same step also ran some forty full-size
/// passes of libtorch per layer (dtype conversions of every gradient, zero-filled gradients of slices added together,
/// concatenations), about a third of a stage-1 step (docs/conversion.md, eighth round). A test pins the output to the
/// model's mixer and the gradients to autograd through the model's own training forward.
/// </summary>
public sealed class MixerFunction
{
    private readonly Parameter _inProj, _convWeight, _xProj, _dtWeight, _dtBias, _aLog, _d, _outProj;
    private readonly Parameter? _convBias;
    private readonly MambaMixerShape _shape;
    private readonly ScalarType _matmul;

    /// <param name="matmulDType">
    /// dtype of the mixer's products (in_proj, x_proj, dt_proj, out_proj and the loss's o_proj), forward and backward; the
    /// weights, their gradients and everything else stay float32. bfloat16 is ~4–6× faster on a CPU with bfloat16
    /// instructions (docs/conversion.md), and Mamba's own training runs these products under autocast.
    /// </param>
    public MixerFunction(MambaMixer mixer, ScalarType matmulDType = ScalarType.Float32)
    {
        _shape = mixer.Shape;
        _matmul = matmulDType;
        var p = mixer.named_parameters().ToDictionary(n => n.name, n => n.parameter);
        if (p.ContainsKey("in_proj.bias") || p.ContainsKey("out_proj.bias"))
        {
            // A converted model's mixers have none (MambaMixerShape.UseBias); a standalone Mamba model is not distilled.
            throw new ArgumentException("stage 1 trains mixers without in_proj and out_proj biases");
        }
        _inProj = p["in_proj.weight"];
        _convWeight = p["conv1d_weight"];
        _convBias = p.GetValueOrDefault("conv1d_bias");
        _xProj = p["x_proj.weight"];
        _dtWeight = p["dt_proj.weight"];
        _dtBias = p["dt_proj.bias"];
        _aLog = p["A_log"];
        _d = p["D"];
        _outProj = p["out_proj.weight"];
    }

    /// <summary>x [B × L, input] (B sequences of L tokens, packed, each from an empty state) → [B × L, output], without gradients.</summary>
    /// <param name="threads">Threads for the convolution and scan kernels (a worker's own); null: the process's.</param>
    public Tensor Forward(Tensor x, int sequences, KernelThreads? threads = null)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        threads ??= KernelThreads.ForThisProcess;
        return (UsesKernels(x) ? Run(x, sequences, threads).Output : Differentiable(x, sequences, threads)).MoveToOuterDisposeScope();
    }

    /// <summary>Whether the hand-written forward and backward run: on a CPU with 512-bit vectors (else libtorch's operations and autograd).</summary>
    internal bool UsesKernels(Tensor x) => !ForceAutograd && SelectiveScanFunction.Supports(x.device);

    /// <summary>Testing only: the autograd form everywhere, as off the CPU.</summary>
    internal bool ForceAutograd { get; init; }

    /// <summary>
    /// Stage 1's loss for this mixer and its gradients, added to the parameters' (as a backward would): with the error
    /// δ = mixer(x) − target as o_proj passes it on (<paramref name="weight"/>), returns Σ‖δ Wᵀ‖² / <paramref name="norm"/>,
    /// and adds ∂(<paramref name="scale"/> · Σ‖δ Wᵀ‖² / norm)/∂θ to each parameter's gradient.
    /// </summary>
    /// <param name="x">[B × L, input], the teacher's input of the layer (any float dtype; no gradient).</param>
    /// <param name="target">[B × L, output] float32, the replaced heads' output.</param>
    public double Stage1Backward(Tensor x, int sequences, Tensor target, ErrorWeight weight, double norm, double scale, KernelThreads? threads = null)
    {
        using var gradients = Stage1ForUnitNorm(x, sequences, target, weight, scale, threads);
        return gradients.AddTo(norm);
    }

    /// <summary>
    /// Stage 1's loss and gradients for norm 1, kept rather than added (<see cref="Stage1Gradients.AddTo"/> divides
    /// them by the norm as it adds them). Why: the norm pools the teacher targets of a whole batch, and a
    /// <see cref="DistillTeam"/> worker runs its share's mixers while the other shares' teachers still run; the
    /// gradients are linear in the error's scale, so computing them for norm 1 and dividing as they are added is the
    /// same function.
    /// </summary>
    public Stage1Gradients Stage1ForUnitNorm(Tensor x, int sequences, Tensor target, ErrorWeight weight, double scale, KernelThreads? threads = null)
    {
        using var scope = NewDisposeScope();
        threads ??= KernelThreads.ForThisProcess;
        if (!UsesKernels(x))
        {
            // Scalars made and freed here: TorchSharp frees an implicit one in its finalizer, which may run while an
            // operation still reads it (docs/runtime.md).
            using Scalar scaled = scale;
            var total = weight.Differentiable(Differentiable(x, sequences, threads) - target);
            Parameter[] parameters = [.. new[] { _inProj, _convWeight, _convBias, _xProj, _dtWeight, _dtBias, _aLog, _d, _outProj }.OfType<Parameter>()];
            // Copies: autograd's results may share memory or be expanded, and AddTo scales its own tensors in place.
            var computed = torch.autograd.grad([total.mul(scaled)], parameters).Select(g => g.clone());
            return Kept(total.item<float>(), parameters.Zip(computed).ToList());
        }
        using var _ = no_grad();
        using Scalar factor = 2 * scale;
        var f = Run(x, sequences, threads);
        var (tokens, inner) = (x.shape[0], _shape.InnerSize);
        // Each parameter's gradient for norm 1 (added, divided by the norm, by Stage1Gradients.AddTo).
        var gradients = new List<(Parameter Parameter, Tensor Gradient)>();
        void AddGradient(Parameter parameter, Tensor gradient) => gradients.Add((parameter, gradient));

        // The loss, and ∂/∂out (for norm 1).
        var (squares, gradOut) = weight.Apply(f.Output - target, factor);

        // out_proj.
        var gradOutLow = Low(gradOut!);
        AddGradient(_outProj, Product(gradOutLow.t(), f.YLow));
        var gradY = Product(gradOutLow, f.OutProj);                                        // [T, dI]

        // The scan (softplus of Δ and the SiLU(z) gate inside), one sequence at a time from a zero state.
        var length = tokens / sequences;
        var a = -_aLog.exp();
        var scan = new SelectiveScan.ScanGradients(empty(tokens, inner), empty(tokens, inner), zeros(tokens, _shape.StateSize), zeros(tokens, _shape.StateSize),
            zeros(inner, _shape.StateSize), zeros(inner), empty(tokens, inner));
        for (var s = 0; s < sequences; s++)
        {
            Tensor Rows(Tensor t) => t.narrow(0, s * length, length);
            SelectiveScan.Backward(Rows(f.Xc), Rows(f.DtRaw), Rows(f.B), Rows(f.C), a, _d, null, Rows(gradY), threads, Rows(f.Z),
                results: scan with { X = Rows(scan.X), Dt = Rows(scan.Dt), B = Rows(scan.B), C = Rows(scan.C), Gate = Rows(scan.Gate!) });
        }
        AddGradient(_aLog, scan.A * a);                                                    // A = −exp(A_log): ∂A/∂A_log = A
        AddGradient(_d, scan.D);

        // dt_proj (its bias added after the product, in float32), then x_proj.
        AddGradient(_dtBias, scan.Dt.sum(dim: 0));
        var gradDtLow = Low(scan.Dt);
        AddGradient(_dtWeight, Product(gradDtLow.t(), Low(f.DtInput)));
        var gradParameters = cat([Product(gradDtLow, f.DtWeight), scan.B, scan.C], 1);    // [T, rank + 2N]
        var gradParametersLow = Low(gradParameters);
        AddGradient(_xProj, Product(gradParametersLow.t(), f.XcLow));
        var gradXc = scan.X.add_(Product(gradParametersLow, f.XProj));                    // [T, dI]

        // The convolution and its SiLU, then in_proj (no gradient for x: it is the teacher's).
        var (gradU, gradConv, gradConvBias) = CausalConvFunction.Gradients(f.U.view(sequences, length, inner), _convWeight.detach(), f.ConvBias,
            gradXc.view(sequences, length, inner), threads);
        AddGradient(_convWeight, gradConv);
        if (_convBias is not null)
        {
            AddGradient(_convBias, gradConvBias);
        }
        var xLow = Low(x);
        var inGradient = cat([Product(Low(gradU.view(tokens, inner)).t(), xLow), Product(Low(scan.Gate!).t(), xLow)], 0);   // [2 dI, input]
        AddGradient(_inProj, inGradient);

        return Kept(squares, gradients);
    }

    /// <summary>The gradients out of the call's dispose scope, into the caller's hands.</summary>
    private static Stage1Gradients Kept(double squares, List<(Parameter Parameter, Tensor Gradient)> gradients)
    {
        foreach (var (_, gradient) in gradients)
        {
            gradient.DetachFromDisposeScope();
        }
        return new Stage1Gradients(squares, gradients);
    }

    /// <summary>
    /// The mixer as libtorch operations with autograd, for devices without the kernels (a GPU): the convolution and the
    /// scan are <see cref="CausalConvolution.Training"/> and <see cref="TensorScan.TrainingGated"/>, as the model's own
    /// training forward runs them.
    /// </summary>
    private Tensor Differentiable(Tensor x, int sequences, KernelThreads threads)
    {
        var length = x.shape[0] / sequences;
        var inner = _shape.InnerSize;
        var projected = Model.Layers.Linear.Product(x, _inProj, null, _matmul).view(sequences, length, 2 * inner);
        var u = projected.narrow(2, 0, inner);
        var gate = projected.narrow(2, inner, inner);
        var xc = CausalConvolution.Training(u, _convWeight, _convBias, threads);                  // [B, L, dI]
        var parameters = Model.Layers.Linear.Product(xc, _xProj, null, _matmul);
        var (rank, state) = (_shape.TimeStepRank, _shape.StateSize);
        var dtRaw = Model.Layers.Linear.Product(parameters.narrow(2, 0, rank), _dtWeight, null, _matmul) + _dtBias;
        var y = TensorScan.TrainingGated(xc, dtRaw, parameters.narrow(2, rank, state), parameters.narrow(2, rank + state, state), -_aLog.exp(), _d, gate, threads);
        return Model.Layers.Linear.Product(y, _outProj, null, _matmul);
    }

    /// <summary>What the forward keeps for the backward: activations float32, weights and the products' inputs in the products' dtype.</summary>
    private sealed record Activations(Tensor U, Tensor Z, Tensor Xc, Tensor XcLow, Tensor DtInput, Tensor DtRaw, Tensor B, Tensor C, Tensor YLow, Tensor Output,
        Tensor ConvBias, Tensor XProj, Tensor DtWeight, Tensor OutProj);

    private Activations Run(Tensor x, int sequences, KernelThreads threads)
    {
        var tokens = x.shape[0];
        var length = tokens / sequences;
        var (inner, rank, state) = (_shape.InnerSize, _shape.TimeStepRank, _shape.StateSize);
        var xLow = Low(x);
        var inProj = Low(_inProj.detach());
        // u and z from the two halves of in_proj's rows, each its own contiguous product (no slicing copies).
        var u = Product(xLow, inProj.narrow(0, 0, inner).t());                             // [T, dI]
        var z = Product(xLow, inProj.narrow(0, inner, inner).t());
        var convBias = _convBias?.detach() ?? zeros(inner);
        var xc = CausalConvFunction.Compute(u.view(sequences, length, inner), _convWeight.detach(), convBias, threads).view(tokens, inner);

        var xcLow = Low(xc);
        var xProj = Low(_xProj.detach());
        var parameters = Product(xcLow, xProj.t());                                       // [T, rank + 2N]
        var dtInput = parameters.narrow(1, 0, rank).contiguous();
        var dtWeight = Low(_dtWeight.detach());
        var dtRaw = Product(Low(dtInput), dtWeight.t()).add_(_dtBias.detach());           // [T, dI], Δ = softplus of it
        var b = parameters.narrow(1, rank, state).contiguous();
        var c = parameters.narrow(1, rank + state, state).contiguous();
        var a = -_aLog.detach().exp();
        var y = empty(tokens, inner);
        for (var s = 0; s < sequences; s++)
        {
            Tensor Rows(Tensor t) => t.narrow(0, s * length, length);
            SelectiveScan.Forward(Rows(xc), Rows(dtRaw), Rows(b), Rows(c), a, _d.detach(), zeros(inner, state), threads, Rows(z), into: Rows(y));
        }

        var outProj = Low(_outProj.detach());
        var yLow = Low(y);
        var output = Product(yLow, outProj.t());
        return new Activations(u, z, xc, xcLow, dtInput, dtRaw, b, c, yLow, output, convBias, xProj, dtWeight, outProj);
    }

    private Tensor Low(Tensor t) => t.to_type(_matmul);

    /// <summary>a · b in the products' dtype (both already in it), as float32.</summary>
    private static Tensor Product(Tensor a, Tensor b) => a.mm(b).to_type(ScalarType.Float32);
}

/// <summary>
/// One mixer's stage-1 loss and gradients for norm 1 (<see cref="MixerFunction.Stage1ForUnitNorm"/>), until they are added
/// to the parameters' gradients divided by the norm. Owns the gradient tensors.
/// </summary>
public sealed class Stage1Gradients(double squares, IReadOnlyList<(Parameter Parameter, Tensor Gradient)> gradients) : IDisposable
{
    /// <summary>Σ‖δ Wᵀ‖², the loss for norm 1.</summary>
    public double Squares => squares;

    /// <summary>How many gradient values there are (the work of adding them).</summary>
    public long Elements => gradients.Sum(g => g.Gradient.numel());

    /// <summary>Adds each gradient / <paramref name="norm"/> to its parameter's gradient; returns the loss, Squares / norm.</summary>
    public double AddTo(double norm)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope(); // the gradients' wrappers
        // A Scalar made and freed here: TorchSharp frees an implicit one in its finalizer, which may run while an
        // operation still reads it (docs/runtime.md).
        using Scalar perNorm = 1 / norm;
        foreach (var (parameter, gradient) in gradients)
        {
            if (parameter.grad is { } sum)
            {
                sum.add_(gradient.view(sum.shape), alpha: perNorm);
            }
            else
            {
                // The gradient is this object's own tensor, so it is scaled in place and handed over.
                parameter.grad = gradient.view(parameter.shape).mul_(perNorm);
            }
        }
        return squares / norm;
    }

    public void Dispose()
    {
        foreach (var (_, gradient) in gradients)
        {
            gradient.Dispose();
        }
    }
}
