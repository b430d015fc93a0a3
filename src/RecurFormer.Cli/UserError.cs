namespace RecurFormer.Cli;

/// <summary>
/// A mistake in what the user gave us (a path, a value, a file's contents). The CLI prints its message as one
/// line and exits with <see cref="ExitCode"/>; no stack trace unless --verbose.
/// </summary>
public sealed class UserError(string message, int exitCode = 1) : Exception(message)
{
    public int ExitCode { get; } = exitCode;
}
