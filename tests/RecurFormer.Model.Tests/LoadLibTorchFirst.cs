using System.Runtime.CompilerServices;

namespace RecurFormer.Model.Tests;

/// <summary>
/// Loads libtorch the project's way before any test touches TorchSharp: a test that made a tensor first would let
/// TorchSharp's own loader fail on Debian 12 and leave the whole test process unable to load it.
/// </summary>
internal static class LoadLibTorchFirst
{
    [ModuleInitializer]
    internal static void Load() => RecurFormer.Model.Runtime.TorchRuntime.EnsureLoaded();
}
