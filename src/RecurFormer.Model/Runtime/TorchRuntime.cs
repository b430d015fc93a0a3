using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Model.Runtime;

/// <summary>The one place that starts TorchSharp: native loading, device, compute dtype, CPU threads.</summary>
public static class TorchRuntime
{
    private static readonly Lock Gate = new();
    private static bool _loaded;

    /// <summary>Loads libtorch (once per process) and resolves the options to a device and a compute dtype.</summary>
    public static ComputeTarget Initialize(TorchOptions? options = null)
    {
        options ??= new TorchOptions();
        EnsureLoaded();
        var device = ParseDevice(options.Device);
        if (device.type == DeviceType.CUDA)
        {
            if (!cuda.is_available())
            {
                throw new TorchRuntimeException(
                    $"--device {options.Device}: CUDA is not available. The libtorch in use is a CPU build; set {LibTorchLoader.LibTorchDirVariable} to the 'lib' folder of a CUDA build of PyTorch/libtorch (see docs/gpu.md), or use --device cpu.");
            }
            if (device.index >= cuda.device_count())
            {
                throw new TorchRuntimeException($"--device {options.Device}: only {cuda.device_count()} CUDA device(s) are visible.");
            }
        }
        // Default: the CPUs this process may use as .NET counts them, which honours a container's CPU limit (cgroup
        // quota). libtorch's own default counts every core of the node, and the engine's kernel threads (one per
        // libtorch thread, meeting at barriers) stall badly when there are more of them than CPUs to run them.
        set_num_threads(options.Threads is > 0 ? options.Threads.Value : Environment.ProcessorCount);
        return new ComputeTarget(device, ParseDType(options.DType, device));
    }

    /// <summary>Loads the native libraries once; a failure is reported as one clear <see cref="TorchRuntimeException"/>.</summary>
    public static void EnsureLoaded()
    {
        lock (Gate)
        {
            if (_loaded)
            {
                return;
            }
            try
            {
                LibTorchLoader.Load();
                InitializeDeviceType(DeviceType.CPU);
                using var probe = ones(2, 2);
                _ = probe.matmul(probe).sum().item<float>();
            }
            catch (TorchRuntimeException)
            {
                throw;
            }
            catch (Exception error) when (error is DllNotFoundException or NotSupportedException or TypeInitializationException or EntryPointNotFoundException or BadImageFormatException)
            {
                throw new TorchRuntimeException(
                    "libtorch could not be loaded: " + FirstLine(error.GetBaseException().Message) + ". " +
                    "RecurFormer needs the libtorch-cpu-linux-x64 package next to the application (restored by 'dotnet build'), " +
                    $"or {LibTorchLoader.LibTorchDirVariable} pointing at a libtorch 'lib' folder of version 2.10 or close to it.", error);
            }
            _loaded = true;
        }
    }

    public static Device ParseDevice(string text)
    {
        var value = text.Trim().ToLowerInvariant();
        if (value == "cpu")
        {
            return CPU;
        }
        if (value == "cuda")
        {
            return new Device(DeviceType.CUDA, 0);
        }
        if (value.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(value[5..], out var index) && index >= 0)
        {
            return new Device(DeviceType.CUDA, index);
        }
        throw new TorchRuntimeException($"unknown device '{text}': use cpu, cuda or cuda:N");
    }

    /// <summary>
    /// <c>auto</c> is bfloat16 on CUDA and on a CPU with bfloat16 instructions (AVX512_BF16 or AMX), where it is
    /// faster (half the weight bytes per decode step, oneDNN's bfloat16 matrix products for prefill; docs/benchmarks.md),
    /// and float32 on other CPUs, where libtorch emulates bfloat16 slowly.
    /// </summary>
    public static ScalarType ParseDType(string text, Device device) => text.Trim().ToLowerInvariant() switch
    {
        "auto" or "" => device.type == DeviceType.CUDA || CpuFeatures.HasBFloat16 ? ScalarType.BFloat16 : ScalarType.Float32,
        "float32" or "fp32" or "float" => ScalarType.Float32,
        "bfloat16" or "bf16" => ScalarType.BFloat16,
        "float16" or "fp16" or "half" => ScalarType.Float16,
        _ => throw new TorchRuntimeException($"unknown dtype '{text}': use auto, float32, bfloat16 or float16"),
    };

    private static string FirstLine(string text) => text.Split('\n', 2)[0].Trim();
}

/// <summary>The device and compute dtype that model weights and activations use.</summary>
public sealed record ComputeTarget(Device Device, ScalarType DType)
{
    public override string ToString() => $"{Device} {DType}";
}
