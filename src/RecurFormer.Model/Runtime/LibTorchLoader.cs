using System.Reflection;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;

namespace RecurFormer.Model.Runtime;

/// <summary>
/// Loads libtorch and TorchSharp's native shim (<c>libLibTorchSharp.so</c>) before TorchSharp's first call, so that
/// TorchSharp starts on this machine without manual steps:
/// <list type="bullet">
/// <item><c>RECURFORMER_LIBTORCH_DIR</c> names a libtorch folder (for example the CUDA build inside a PyTorch
/// install); its libraries are loaded first, so the shim binds to them rather than to the CPU package.</item>
/// <item>Where the system libstdc++ lacks a symbol version that the shim asks for but never uses (Debian 12 and
/// <c>GLIBCXX_3.4.32</c>), a private copy of the shim with that requirement marked weak is written to the user's
/// cache folder and loaded instead. Newer systems take the normal path.</item>
/// </list>
/// Loading is by full path; the dynamic loader then matches TorchSharp's later by-name loads on the libraries'
/// sonames, and a DllImport resolver points TorchSharp's P/Invokes at the handle we loaded.
/// </summary>
internal static class LibTorchLoader
{
    public const string LibTorchDirVariable = "RECURFORMER_LIBTORCH_DIR";
    private const string ShimFile = "libLibTorchSharp.so";
    private const string MissingVersion = "GLIBCXX_3.4.32";

    // Load order matters: each library's dependencies first. CUDA ones are optional (absent in CPU builds).
    private static readonly string[] LibTorchFiles = ["libc10.so", "libtorch_cpu.so", "libc10_cuda.so", "libtorch_cuda.so", "libtorch.so"];

    private static IntPtr _shimHandle;

    /// <summary>What was loaded, for logs and error messages.</summary>
    public static List<string> Trace { get; } = [];

    public static void Load()
    {
        if (!OperatingSystem.IsLinux())
        {
            return; // TorchSharp's own loader handles the other platforms.
        }
        OpenMpWaiting.Apply();
        AllocatorTuning.KeepFreedMemory();

        var libTorchDir = Environment.GetEnvironmentVariable(LibTorchDirVariable);
        if (!string.IsNullOrWhiteSpace(libTorchDir))
        {
            if (!Directory.Exists(libTorchDir) || !File.Exists(Path.Combine(libTorchDir, "libtorch_cpu.so")))
            {
                throw new TorchRuntimeException(
                    $"{LibTorchDirVariable}={libTorchDir} does not contain libtorch_cpu.so. " +
                    "Point it at a libtorch 'lib' folder, e.g. the output of python3 -c \"import torch,os;print(os.path.join(os.path.dirname(torch.__file__),'lib'))\", or unset it to use the libtorch that ships with RecurFormer.");
            }
            PreloadLibTorch(libTorchDir);
        }

        var shim = FindShim();
        if (shim is null)
        {
            Trace.Add($"{ShimFile} not found next to the application; leaving the load to TorchSharp");
            return;
        }

        var shimBytes = File.ReadAllBytes(shim);
        if (!ElfVersionPatcher.RequiresStrongly(shimBytes, MissingVersion) || SystemLibStdCxxHas(MissingVersion))
        {
            return; // The normal path works: TorchSharp loads its shim and libtorch itself.
        }

        // The shim's neighbours are found through its RUNPATH ($ORIGIN); a copy elsewhere needs them loaded first.
        if (string.IsNullOrWhiteSpace(libTorchDir))
        {
            PreloadLibTorch(Path.GetDirectoryName(shim)!);
        }
        var patched = WritePatchedShim(shimBytes);
        _shimHandle = LoadOrExplain(patched);
        Trace.Add($"loaded {patched} ({MissingVersion} marked weak: the system libstdc++ lacks it)");
        TrySetResolver();
    }

    private static void PreloadLibTorch(string folder)
    {
        foreach (var file in LibTorchFiles)
        {
            var path = Path.Combine(folder, file);
            if (File.Exists(path))
            {
                LoadOrExplain(path);
                Trace.Add($"loaded {path}");
            }
        }
    }

    private static IntPtr LoadOrExplain(string path)
    {
        try
        {
            return NativeLibrary.Load(path);
        }
        catch (Exception error) when (error is DllNotFoundException or BadImageFormatException)
        {
            throw new TorchRuntimeException($"cannot load {path}: {error.Message}", error);
        }
    }

    /// <summary>The shim where the .NET host would find it: next to the app, or under runtimes/linux-x64/native.</summary>
    private static string? FindShim()
    {
        var roots = new[] { AppContext.BaseDirectory, Path.GetDirectoryName(typeof(TorchSharp.torch).Assembly.Location) ?? "" };
        foreach (var root in roots.Where(r => r.Length > 0).Distinct())
        {
            foreach (var candidate in new[] { Path.Combine(root, ShimFile), Path.Combine(root, "runtimes", RuntimeInformation.RuntimeIdentifier, "native", ShimFile), Path.Combine(root, "runtimes", "linux-x64", "native", ShimFile) })
            {
                if (File.Exists(candidate))
                {
                    return candidate;
                }
            }
        }
        return null;
    }

    /// <summary>Does the libstdc++ already mapped into this process (the .NET runtime links it) define the version?</summary>
    private static bool SystemLibStdCxxHas(string version)
    {
        var mapped = File.ReadLines("/proc/self/maps")
            .Select(line => line.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .Where(fields => fields.Length >= 6 && Path.GetFileName(fields[5]).StartsWith("libstdc++.so", StringComparison.Ordinal))
            .Select(fields => fields[5])
            .FirstOrDefault();
        if (mapped is null || !File.Exists(mapped))
        {
            return false;
        }
        var needle = Encoding.ASCII.GetBytes(version + "\0");
        return File.ReadAllBytes(mapped).AsSpan().IndexOf(needle) >= 0;
    }

    /// <summary>Writes the patched copy once per shim build, atomically, into the user's cache (or temp) folder.</summary>
    private static string WritePatchedShim(byte[] shimBytes)
    {
        var hash = Convert.ToHexString(SHA256.HashData(shimBytes))[..16].ToLowerInvariant();
        ElfVersionPatcher.MarkWeak(shimBytes, MissingVersion);

        foreach (var cacheRoot in CacheRoots())
        {
            try
            {
                var folder = Path.Combine(cacheRoot, "recurformer", "native", hash);
                var target = Path.Combine(folder, ShimFile);
                if (File.Exists(target) && new FileInfo(target).Length == shimBytes.Length)
                {
                    return target;
                }
                Directory.CreateDirectory(folder);
                var temporary = Path.Combine(folder, $"{ShimFile}.{Environment.ProcessId}.tmp");
                File.WriteAllBytes(temporary, shimBytes);
                File.Move(temporary, target, overwrite: true);
                return target;
            }
            catch (Exception error) when (error is IOException or UnauthorizedAccessException)
            {
                Trace.Add($"cannot write the patched shim under {cacheRoot}: {error.Message}");
            }
        }
        throw new TorchRuntimeException(
            $"the system libstdc++ lacks {MissingVersion}, and no writable cache or temp folder was found for a patched copy of {ShimFile}. " +
            "Set XDG_CACHE_HOME or TMPDIR to a writable folder, or run on a system with libstdc++ from GCC 13 or newer.");
    }

    private static IEnumerable<string> CacheRoots()
    {
        var xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        if (!string.IsNullOrWhiteSpace(xdg))
        {
            yield return xdg;
        }
        var home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        if (!string.IsNullOrWhiteSpace(home))
        {
            yield return Path.Combine(home, ".cache");
        }
        yield return Path.GetTempPath();
    }

    private static void TrySetResolver()
    {
        try
        {
            NativeLibrary.SetDllImportResolver(typeof(TorchSharp.torch).Assembly, Resolve);
        }
        catch (InvalidOperationException)
        {
            // Someone set one already; the soname match still directs TorchSharp's by-name loads to our copy.
        }
    }

    private static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? searchPath) =>
        name is "LibTorchSharp" or "libLibTorchSharp" or ShimFile ? _shimHandle : IntPtr.Zero;
}
