namespace RecurFormer.Model;

/// <summary>
/// A checkpoint folder, config or weight file is not what a model needs. The message is one line that names the
/// file or value and what is wrong.
/// </summary>
public sealed class ModelLoadException(string message, Exception? inner = null) : Exception(message, inner);
