using RecurFormer.Model.Runtime;

namespace RecurFormer.Model.Tests;

/// <summary>The patch that lets TorchSharp's shim load on a libstdc++ without GLIBCXX_3.4.32.</summary>
public sealed class ElfVersionPatcherTests
{
    private static byte[] Shim()
    {
        var path = Directory.GetFiles(AppContext.BaseDirectory, "libLibTorchSharp.so", SearchOption.AllDirectories).First();
        return File.ReadAllBytes(path);
    }

    [Fact]
    public void The_shipped_shim_requires_GLIBCXX_3_4_32_strongly_and_the_patch_makes_it_weak()
    {
        var bytes = Shim();
        Assert.True(ElfVersionPatcher.RequiresStrongly(bytes, "GLIBCXX_3.4.32"));

        Assert.Equal(1, ElfVersionPatcher.MarkWeak(bytes, "GLIBCXX_3.4.32"));

        Assert.False(ElfVersionPatcher.RequiresStrongly(bytes, "GLIBCXX_3.4.32"));
        Assert.True(ElfVersionPatcher.RequiresStrongly(bytes, "GLIBCXX_3.4.30")); // only the named version changes
        Assert.Equal(0, ElfVersionPatcher.MarkWeak(bytes, "GLIBCXX_3.4.32"));     // idempotent
    }

    [Fact]
    public void The_patch_changes_exactly_two_bytes_of_flags()
    {
        var original = Shim();
        var patched = (byte[])original.Clone();
        ElfVersionPatcher.MarkWeak(patched, "GLIBCXX_3.4.32");

        var changed = Enumerable.Range(0, original.Length).Where(i => original[i] != patched[i]).ToArray();
        Assert.Single(changed);
        Assert.Equal(original[changed[0]] | 0x2, patched[changed[0]]);
    }

    [Fact]
    public void A_file_that_is_not_ELF_is_rejected()
    {
        Assert.Throws<InvalidDataException>(() => ElfVersionPatcher.RequiresStrongly(new byte[100], "GLIBCXX_3.4.32"));
    }

    [Fact]
    public void Unknown_devices_and_dtypes_are_explained()
    {
        Assert.Contains("use cpu, cuda or cuda:N", Assert.Throws<TorchRuntimeException>(() => TorchRuntime.ParseDevice("tpu")).Message);
        TorchRuntime.EnsureLoaded();
        Assert.Contains("use auto, float32, bfloat16 or float16", Assert.Throws<TorchRuntimeException>(() => TorchRuntime.ParseDType("int4", TorchSharp.torch.CPU)).Message);
        Assert.Equal(TorchSharp.torch.ScalarType.BFloat16, TorchRuntime.ParseDType("auto", new TorchSharp.torch.Device("cuda:0")));
        // On the CPU, auto is bfloat16 where the CPU has bfloat16 instructions (faster there), float32 elsewhere.
        Assert.Equal(CpuFeatures.HasBFloat16 ? TorchSharp.torch.ScalarType.BFloat16 : TorchSharp.torch.ScalarType.Float32, TorchRuntime.ParseDType("auto", TorchSharp.torch.CPU));
    }
}
