using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Toolkit.Distillation;

/// <summary>
/// How stage 1 measures an error δ [T, output] of the replaced heads as o_proj passes it on: Σ‖δ Wᵀ‖² for o_proj's
/// columns W [hidden, output] of those heads, without the product by W. Σ‖δ Wᵀ‖² = Σ δ G δ with the Gram matrix
/// G = WᵀW [output, output]: one product by G gives the loss, and its gradient 2 δ G falls out of it (the error through
/// W and its backward were two products by W). But G rounded to bfloat16 (2⁻⁹ relative per entry) can be indefinite:
/// it was, for the 50% student's layers whose every head is replaced. Then δ G δ could reward errors along a direction.
/// There, G = RᵀR (Cholesky) and the error is Σ‖δ Rᵀ‖²: a sum of squares whatever the rounding, for a second product.
/// </summary>
public sealed class ErrorWeight : IDisposable
{
    private readonly Tensor _matrix;   // G, or R, in the products' dtype

    private ErrorWeight(Tensor matrix, bool factor) => (_matrix, IsFactor) = (matrix, factor);

    /// <summary>Whether the error goes through the Cholesky factor (two products) rather than the Gram matrix (one).</summary>
    public bool IsFactor { get; }

    /// <summary>The products' dtype.</summary>
    public ScalarType DType => _matrix.dtype;

    /// <param name="columns">[hidden, output], o_proj's columns of the replaced heads.</param>
    /// <param name="dtype">The products' dtype.</param>
    public static ErrorWeight For(Tensor columns, ScalarType dtype) => For(columns, dtype, factor: null);

    /// <param name="factor">null: the Gram matrix where its rounding stays positive semi-definite; true/false: that form (tests).</param>
    internal static ErrorWeight For(Tensor columns, ScalarType dtype, bool? factor)
    {
        using var scope = NewDisposeScope();
        using Scalar half = 0.5;
        var full = columns.detach().to_type(ScalarType.Float64);
        var gram = full.t().mm(full);
        gram = (gram + gram.t()).mul_(half);                               // exactly symmetric
        var rounded = gram.to_type(dtype);
        if (factor == false || (factor is null && linalg.eigvalsh(rounded.to_type(ScalarType.Float64)).min().item<double>() >= 0))
        {
            return new ErrorWeight(rounded.MoveToOuterDisposeScope(), factor: false);
        }
        // G = L Lᵀ, R = Lᵀ; a tiny ridge where G is singular (columns that are dependent).
        var ridge = eye(gram.shape[0], dtype: ScalarType.Float64, device: gram.device) * (1e-12 * gram.diagonal().max().item<double>());
        var lower = linalg.cholesky(gram + ridge);
        return new ErrorWeight(lower.t().contiguous().to_type(dtype).MoveToOuterDisposeScope(), factor: true);
    }

    /// <summary>
    /// Σ‖δ Wᵀ‖² of <paramref name="delta"/> [T, output] (taken in the products' dtype), and, when asked, its gradient
    /// 2 δ G (float32, [T, output]) times <paramref name="scale"/>.
    /// </summary>
    public (double Squares, Tensor? Gradient) Apply(Tensor delta, Scalar? scale = null)
    {
        var low = delta.to_type(_matrix.dtype);
        if (!IsFactor)
        {
            var weighted = low.mm(_matrix).to_type(ScalarType.Float32);                         // δ G
            var squares = weighted.mul(low.to_type(ScalarType.Float32)).sum().item<float>();
            return (squares, scale is null ? null : weighted.mul_(scale));
        }
        var error = low.mm(_matrix.t()).to_type(ScalarType.Float32);                             // δ Rᵀ
        var sum = error.square().sum().item<float>();
        return (sum, scale is null ? null : error.to_type(_matrix.dtype).mm(_matrix).to_type(ScalarType.Float32).mul_(scale));   // (δ Rᵀ) R
    }

    /// <summary>The same Σ‖δ Wᵀ‖² as a differentiable scalar (the autograd form, off the CPU kernels' devices).</summary>
    public Tensor Differentiable(Tensor delta)
    {
        var low = delta.to_type(_matrix.dtype);
        return IsFactor
            ? low.mm(_matrix.t()).to_type(ScalarType.Float32).square().sum()
            : low.mm(_matrix).mul(low).to_type(ScalarType.Float32).sum();
    }

    public void Dispose() => _matrix.Dispose();
}
