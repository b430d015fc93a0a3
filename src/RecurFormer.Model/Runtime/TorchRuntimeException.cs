namespace RecurFormer.Model.Runtime;

/// <summary>libtorch or TorchSharp's shim could not be loaded, or a device/dtype option is unusable. The message names the cause and the fix.</summary>
public sealed class TorchRuntimeException(string message, Exception? inner = null) : Exception(message, inner);
