namespace RecurFormer.Cli;

/// <summary>Turns an exception into one line on stderr and an exit code.</summary>
public static class CliErrors
{
    public static int Report(Exception error, bool verbose)
    {
        var (message, exitCode) = error switch
        {
            UserError user => (user.Message, user.ExitCode),
            RecurFormer.Model.ModelLoadException load => (load.Message, 1),
            RecurFormer.Model.Runtime.TorchRuntimeException runtime => (runtime.Message, 1),
            RecurFormer.Tokenization.TokenizerLoadException tokenizer => (tokenizer.Message, 1),
            FileNotFoundException missing => (missing.Message, 1),
            DirectoryNotFoundException missing => (missing.Message, 1),
            _ => ($"{error.GetType().Name}: {error.Message}", 1),
        };
        Console.Error.WriteLine($"error: {message}");
        if (verbose)
        {
            Console.Error.WriteLine(error.ToString());
        }
        return exitCode;
    }
}
