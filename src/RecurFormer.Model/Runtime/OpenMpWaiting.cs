using System.Runtime.InteropServices;

namespace RecurFormer.Model.Runtime;

/// <summary>
/// How long libtorch's OpenMP threads spin after a parallel region before they sleep. libgomp's default (300,000
/// spins, about a millisecond here) keeps a core busy after every libtorch operation; on a 2-core machine that core
/// is the one the kernel threads and the web server need next. Unless the user set <c>OMP_WAIT_POLICY</c> or
/// <c>GOMP_SPINCOUNT</c>, a short spin is set before libgomp starts (it reads its environment once, when loaded).
/// .NET keeps its own copy of the environment on Unix, so the variable goes through libc's setenv.
/// </summary>
internal static partial class OpenMpWaiting
{
    /// <summary>Spins before sleeping: long enough to bridge two operations of one prefill, short enough not to steal a decode step.</summary>
    public const string SpinCount = "20000";

    public static void Apply()
    {
        if (!OperatingSystem.IsLinux() || Environment.GetEnvironmentVariable("OMP_WAIT_POLICY") is not null || Environment.GetEnvironmentVariable("GOMP_SPINCOUNT") is not null)
        {
            return;
        }
        SetEnv("GOMP_SPINCOUNT", SpinCount, 1);
        Environment.SetEnvironmentVariable("GOMP_SPINCOUNT", SpinCount); // for child processes and for what .NET reports
    }

    [LibraryImport("libc", EntryPoint = "setenv", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SetEnv(string name, string value, int overwrite);
}
