using static TorchSharp.torch;

namespace RecurFormer.Model.CausalLM;

public sealed partial class TransformerCausalLM
{
    private bool CanDecodeWithKernels(ForwardBatch batch) => false;

    private Tensor DecodeWithKernels(ForwardBatch batch) => throw new NotSupportedException();

    private void DisposeKernels()
    {
    }
}
