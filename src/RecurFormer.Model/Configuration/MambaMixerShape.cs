namespace RecurFormer.Model.Configuration;

/// <summary>Shape of a Mamba-1 mixer, independent of where it sits (a Mamba model, or replaced attention heads).</summary>
public sealed record MambaMixerShape(int InputSize, int OutputSize, int InnerSize, int StateSize, int ConvKernel, int TimeStepRank, bool UseBias, bool UseConvBias)
{
    /// <summary>
    /// Past inputs a sequence's conv state holds: the kernel's other taps. The newest input arrives with its token, so
    /// a state of ConvKernel columns (as HF's cache keeps it) would hold one that is never read.
    /// </summary>
    public int ConvStateColumns => ConvKernel - 1;

    /// <summary>Bytes of one sequence's recurrent state (conv + SSM), float32.</summary>
    public long StateBytes => 4L * InnerSize * (ConvStateColumns + StateSize);

    /// <summary>Mamba's default time-step rank: ⌈hidden / 16⌉.</summary>
    public static int DefaultTimeStepRank(int hiddenSize) => (int)Math.Ceiling(hiddenSize / 16.0);
}
