namespace RecurFormer.Model.Runtime;

/// <summary>Where and how tensors are computed. Bound from CLI options and server configuration.</summary>
public sealed record TorchOptions
{
    /// <summary><c>cpu</c>, <c>cuda</c> or <c>cuda:N</c>.</summary>
    public string Device { get; init; } = "cpu";

    /// <summary><c>auto</c> (bfloat16 on CUDA and on CPUs with bfloat16 instructions, else float32), <c>float32</c>, <c>bfloat16</c> or <c>float16</c>.</summary>
    public string DType { get; init; } = "auto";

    /// <summary>Intra-op CPU threads; null or 0 keeps libtorch's default (one per core).</summary>
    public int? Threads { get; init; }
}
