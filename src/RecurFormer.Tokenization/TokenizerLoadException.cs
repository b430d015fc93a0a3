namespace RecurFormer.Tokenization;

/// <summary>
/// A checkpoint's tokenizer files are missing, malformed or use a feature this loader does not support.
/// The message is one line that names the file (or folder) and what is wrong, so a CLI can print it as is.
/// </summary>
public sealed class TokenizerLoadException : Exception
{
    public TokenizerLoadException(string path, string problem, Exception? inner = null)
        : base($"{path}: {problem}", inner)
    {
        FilePath = path;
        Problem = problem;
    }

    /// <summary>The file or folder the problem was found in.</summary>
    public string FilePath { get; }

    /// <summary>What is wrong, without the path.</summary>
    public string Problem { get; }
}
