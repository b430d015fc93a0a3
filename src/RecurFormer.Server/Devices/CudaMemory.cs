using System.Runtime.InteropServices;

namespace RecurFormer.Server.Devices;

/// <summary>
/// Free and total memory of a CUDA device, from the CUDA runtime's <c>cudaMemGetInfo</c> (the runtime library ships
/// next to libtorch in its CUDA packages; the system's is tried too). TorchSharp has no binding for it.
/// </summary>
public static unsafe class CudaMemory
{
    private static readonly Lazy<(nint Library, string? Error)> Runtime = new(Load);

    /// <summary>(free, total) bytes of device <paramref name="device"/>, or an error saying why they cannot be read.</summary>
    public static (long Free, long Total)? TryGetInfo(int device, out string? error)
    {
        var (library, loadError) = Runtime.Value;
        if (library == 0)
        {
            error = loadError;
            return null;
        }
        var setDevice = (delegate* unmanaged<int, int>)NativeLibrary.GetExport(library, "cudaSetDevice");
        var memGetInfo = (delegate* unmanaged<nuint*, nuint*, int>)NativeLibrary.GetExport(library, "cudaMemGetInfo");
        var status = setDevice(device);
        if (status != 0)
        {
            error = $"cudaSetDevice({device}) failed with CUDA error {status}";
            return null;
        }
        nuint free, total;
        status = memGetInfo(&free, &total);
        if (status != 0)
        {
            error = $"cudaMemGetInfo failed with CUDA error {status}";
            return null;
        }
        error = null;
        return ((long)free, (long)total);
    }

    private static (nint, string?) Load()
    {
        var names = new List<string>();
        // libtorch's CUDA packages put the runtime beside libtorch (often with a hash in the name: libcudart-1a2b3c4d.so.12).
        foreach (var folder in new[] { Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native"), AppContext.BaseDirectory })
        {
            if (Directory.Exists(folder))
            {
                names.AddRange(Directory.EnumerateFiles(folder, "libcudart*.so*"));
            }
        }
        names.AddRange(["libcudart.so.12", "libcudart.so.13", "libcudart.so.11.0", "libcudart.so", "cudart64_12.dll"]);
        foreach (var name in names)
        {
            if (NativeLibrary.TryLoad(name, out var handle) && NativeLibrary.TryGetExport(handle, "cudaMemGetInfo", out _))
            {
                return (handle, null);
            }
        }
        return (0, "the CUDA runtime library (libcudart) was not found next to libtorch or on the library path");
    }
}
