namespace RecurFormer.Model.Runtime;

/// <summary>
/// What the CPU offers beyond what .NET's intrinsics report: bfloat16 arithmetic (AVX512_BF16, AMX-BF16), which
/// libtorch's oneDNN uses for bfloat16 matrix products. Read from /proc/cpuinfo on Linux; elsewhere assumed absent.
/// </summary>
public static class CpuFeatures
{
    private static readonly Lazy<bool> BFloat16 = new(() =>
    {
        try
        {
            return OperatingSystem.IsLinux() && File.ReadLines("/proc/cpuinfo")
                .Where(line => line.StartsWith("flags", StringComparison.Ordinal))
                .Take(1)
                .Any(line => line.Split(' ', StringSplitOptions.RemoveEmptyEntries).Any(flag => flag is "avx512_bf16" or "amx_bf16"));
        }
        catch (IOException)
        {
            return false;
        }
    });

    public static bool HasBFloat16 => BFloat16.Value;
}
