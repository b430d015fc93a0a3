using System.CommandLine;
using System.Text.RegularExpressions;

namespace RecurFormer.Server.CommandLine;

/// <summary>What the command line asked for: configuration settings, or help, or mistakes to report.</summary>
public sealed record ServerArguments(IReadOnlyDictionary<string, string?> Settings, IReadOnlyList<string> Errors, ParseResult Parse)
{
    public bool HelpRequested => Parse.Action is System.CommandLine.Help.HelpAction;
}

/// <summary>
/// The server's command line, shaped like <c>vllm serve</c>: <c>[serve] [MODEL] [--option value …]</c>, vLLM's option
/// names where the meaning is the same, <c>--help</c>, and an error naming any option it does not know. Each option
/// sets one configuration key (docs/server.md lists them), so everything can also come from <c>RECURFORMER__…</c>
/// environment variables or appsettings.json; <c>--Section:Key=value</c> sets any key directly, and <c>--urls</c>
/// is ASP.NET Core's.
/// </summary>
public static partial class ServerCommandLine
{
    /// <summary>One option and the configuration key it sets.</summary>
    private sealed record Setting(Option Option, string Key);

    /// <summary>The options of one parse (System.CommandLine symbols belong to one command tree, so each parse makes its own).</summary>
    private sealed class Symbols
    {
        public Argument<string?> ModelArgument { get; } = new("MODEL") { Description = ModelDescription, Arity = ArgumentArity.ZeroOrOne };

        public Option<string?> Model { get; } = Text("--model", "Checkpoint folder (HuggingFace layout). Relative paths are looked up from the working directory, then upwards. Default: the demo model.");

        public Option<string[]> ServedModelName { get; } = new("--served-model-name")
        {
            Description = "The model id clients send and responses carry; further names are accepted aliases. Default: the folder's name.",
            AllowMultipleArgumentsPerToken = true,
            Recursive = true,
        };

        public Option<string[]> ApiKey { get; } = new("--api-key")
        {
            Description = "An API key required on /v1/* as 'Authorization: Bearer KEY' (repeat for several).",
            Recursive = true,
        };

        public Option<bool> EnableAutoToolChoice { get; } = new("--enable-auto-tool-choice")
        {
            Description = "Accepted for vLLM compatibility: tool_choice auto is always available.",
            Recursive = true,
        };

        public Option<bool> NoPrefixCaching { get; } = new("--no-prefix-caching")
        {
            Description = "Turn automatic prefix caching off (on by default, as vLLM's; RecurFormer:Engine:EnablePrefixCaching).",
            Recursive = true,
        };

        public IReadOnlyList<Setting> Settings { get; }

        public Symbols()
        {
            Settings =
            [
                new(Model, "RecurFormer:Model:Path"),
                new(Text("--chat-template", "A chat template to use instead of the checkpoint's: a file, or the template text."), "RecurFormer:Model:ChatTemplate"),
                new(Text("--tool-call-parser", "How the model writes tool calls: hermes, llama3_json or mistral. Default: read from the chat template, else hermes."), "RecurFormer:Model:ToolCallParser"),
                new(Text("--device", "cpu, cuda or cuda:N. Default: cpu."), "RecurFormer:Model:Device"),
                new(Text("--dtype", "auto (bfloat16 on CUDA and on CPUs with bf16 instructions, else float32), float32, bfloat16 or float16."), "RecurFormer:Model:DType"),
                new(Number<int>("--threads", "CPU threads for tensor operations. Default: one per core."), "RecurFormer:Model:Threads"),
                new(Text("--cache-memory", "One memory budget for KV blocks, window rings and Mamba state, e.g. 512MB, 2GiB. Default: 512MB."), "RecurFormer:Engine:CacheMemory"),
                new(Number<double>("--gpu-memory-utilization", "On CUDA: the share of the device's memory (0..1] for weights and cache together; the cache gets the rest after loading. Excludes --cache-memory."), "RecurFormer:Engine:GpuMemoryUtilization"),
                new(Number<int>("--block-size", "Tokens per KV block. Default: 16."), "RecurFormer:Engine:BlockSize"),
                new(Number<int>("--max-num-seqs", "Most sequences running at once. Default: 64."), "RecurFormer:Engine:MaxNumSeqs"),
                new(Number<int>("--max-num-batched-tokens", "Token budget of one engine step. Default: 512."), "RecurFormer:Engine:MaxNumBatchedTokens"),
                new(Number<int>("--max-model-len", "Longest prompt + completion. Default: the model's."), "RecurFormer:Engine:MaxModelLen"),
                new(Number<int>("--max-waiting-requests", "Queue length; beyond it requests get 429. Default: 256."), "RecurFormer:Engine:MaxWaitingRequests"),
                new(Text("--kv-cache-dtype", "auto, float32, bfloat16 or float16. Default: auto (16 bits: float16 with float16 compute on CUDA, else bfloat16)."), "RecurFormer:Engine:KvCacheDType"),
                new(Text("--host", "Interface to listen on. Default: 127.0.0.1."), "RecurFormer:Host"),
                new(Number<int>("--port", "Port (0 = any free port). Default: 8000."), "RecurFormer:Port"),
                new(Text("--api-key-file", "A file with one API key per line (# comments)."), "RecurFormer:ApiKeyFile"),
                new(Text("--max-request-body-size", "Larger bodies get 413. Default: 8MB."), "RecurFormer:MaxRequestBodySize"),
                new(Text("--request-timeout", "Longest generation (hh:mm:ss; 0 = none). Default: 00:10:00."), "RecurFormer:RequestTimeout"),
                new(Text("--queue-timeout", "Longest wait in the queue (hh:mm:ss). Default: 00:02:00."), "RecurFormer:QueueTimeout"),
                new(Text("--drain-grace-period", "On SIGTERM, time running requests get to finish (hh:mm:ss). Default: 00:00:30."), "RecurFormer:DrainGracePeriod"),
                new(Text("--keep-alive-interval", "SSE keep-alive comment interval (hh:mm:ss). Default: 00:00:05."), "RecurFormer:KeepAliveInterval"),
                new(Number<int>("--retry-after-seconds", "Retry-After on 429/503. Default: 1."), "RecurFormer:RetryAfterSeconds"),
                new(Text("--urls", "ASP.NET Core listen URLs (instead of --host/--port), e.g. http://0.0.0.0:8000."), "urls"),
            ];
        }
    }

    private const string ModelDescription = "Checkpoint folder to serve (as --model).";

    /// <summary>The <c>serve</c> command (for the <c>recurformer</c> CLI to mount); the server's own root command has the same options.</summary>
    public static Command CreateServeCommand()
    {
        var serve = new Command("serve", "Serve a model with the OpenAI-compatible API (as 'vllm serve').");
        serve.Arguments.Add(new Argument<string?>("MODEL") { Description = ModelDescription, Arity = ArgumentArity.ZeroOrOne });
        return serve;
    }

    private static RootCommand CreateRoot(Symbols symbols)
    {
        var root = new RootCommand("RecurFormer: an OpenAI-compatible server for hybrid attention/Mamba LLMs. Every option is also a configuration key (docs/server.md); --Section:Key=value sets any key.");
        root.Arguments.Add(symbols.ModelArgument);
        foreach (var setting in symbols.Settings)
        {
            root.Options.Add(setting.Option);
        }
        root.Options.Add(symbols.ServedModelName);
        root.Options.Add(symbols.ApiKey);
        root.Options.Add(symbols.EnableAutoToolChoice);
        root.Options.Add(symbols.NoPrefixCaching);
        root.Subcommands.Add(CreateServeCommand());
        // Serving is what Program.cs does after parsing; the actions only make "no subcommand" and "serve" valid lines.
        root.SetAction(_ => 0);
        root.Subcommands[0].SetAction(_ => 0);
        return root;
    }

    /// <summary>Reads the command line: settings by configuration key, and every mistake as one sentence naming the option.</summary>
    public static ServerArguments Parse(IReadOnlyList<string> args)
    {
        // --Section:Key=value sets a configuration key directly (docs/server.md): not an option System.CommandLine knows.
        var settings = new Dictionary<string, string?>(StringComparer.OrdinalIgnoreCase);
        var rest = new List<string>();
        foreach (var arg in args)
        {
            var match = ConfigurationKey().Match(arg);
            if (match.Success)
            {
                settings[match.Groups["key"].Value] = match.Groups["value"].Value;
            }
            else
            {
                rest.Add(arg);
            }
        }
        var symbols = new Symbols();
        var root = CreateRoot(symbols);
        var parse = root.Parse(rest);
        // System.CommandLine takes an unknown "--option" for the MODEL argument (and its value for an extra argument):
        // name the option instead, as argparse does.
        var known = root.Options.Concat(root.Subcommands[0].Options).SelectMany(o => o.Aliases.Append(o.Name)).ToHashSet(StringComparer.Ordinal);
        var unknown = rest.Where(token => token.Length > 1 && token[0] == '-' && !char.IsAsciiDigit(token[1]) && !known.Contains(token.Split('=', 2)[0])).ToList();
        var errors = unknown.Count > 0
            ? unknown.Select(token => $"unknown option '{token.Split('=', 2)[0]}'").ToList()
            : parse.Errors.Select(e => Rephrase(e.Message)).ToList();
        var positional = parse.CommandResult.Command is { Name: "serve" } serve
            ? parse.GetValue((Argument<string?>)serve.Arguments[0])
            : parse.GetValue(symbols.ModelArgument);
        var model = parse.GetValue(symbols.Model);
        if (positional is not null && model is not null && positional != model)
        {
            errors.Add($"the model is given twice, as '{positional}' and as --model '{model}'");
        }
        if (errors.Count > 0)
        {
            return new ServerArguments(settings, errors, parse);
        }
        foreach (var setting in symbols.Settings)
        {
            if (parse.GetResult(setting.Option) is { } result && result.Tokens.Count > 0)
            {
                settings[setting.Key] = result.Tokens[^1].Value;
            }
        }
        if (parse.GetValue(symbols.NoPrefixCaching))
        {
            settings["RecurFormer:Engine:EnablePrefixCaching"] = "false";
        }
        if (positional is not null)
        {
            settings["RecurFormer:Model:Path"] = positional;
        }
        if (parse.GetValue(symbols.ServedModelName) is { Length: > 0 } names)
        {
            settings["RecurFormer:Model:ServedModelName"] = names[0];
            for (var i = 1; i < names.Length; i++)
            {
                settings[$"RecurFormer:Model:ServedModelAliases:{i - 1}"] = names[i];
            }
        }
        if (parse.GetValue(symbols.ApiKey) is { Length: > 0 } keys)
        {
            for (var i = 0; i < keys.Length; i++)
            {
                settings[$"RecurFormer:ApiKeys:{i}"] = keys[i];
            }
        }
        return new ServerArguments(settings, errors, parse);
    }

    /// <summary>Prints help (exit 0) or the mistakes (exit 2, as argparse and vllm do); null when the server should start.</summary>
    public static int? HandleHelpOrErrors(ServerArguments arguments, TextWriter output, TextWriter error)
    {
        if (arguments.HelpRequested)
        {
            arguments.Parse.Invoke(new InvocationConfiguration { Output = output, Error = error });
            return 0;
        }
        if (arguments.Errors.Count > 0)
        {
            foreach (var message in arguments.Errors)
            {
                error.WriteLine($"error: {message}");
            }
            error.WriteLine("Run with --help to see the options.");
            return 2;
        }
        return null;
    }

    /// <summary>System.CommandLine says "Unrecognized command or argument '--x'."; say it about options, once.</summary>
    private static string Rephrase(string message)
    {
        var unknown = Regex.Match(message, "^Unrecognized command or argument '(?<token>.*)'\\.?$");
        if (unknown.Success)
        {
            var token = unknown.Groups["token"].Value;
            return token.StartsWith('-') ? $"unknown option '{token}'" : $"unexpected argument '{token}'";
        }
        return message.TrimEnd('.');
    }

    [GeneratedRegex("^--(?<key>[A-Za-z][A-Za-z0-9_.]*(:[A-Za-z0-9_.]+)+)=(?<value>.*)$", RegexOptions.Singleline)]
    private static partial Regex ConfigurationKey();

    private static Option<string?> Text(string name, string description) => new(name) { Description = description, Recursive = true };

    private static Option<T?> Number<T>(string name, string description) where T : struct =>
        new(name) { Description = description, Recursive = true };

    /// <summary>The option names this command line knows (for documentation tests).</summary>
    public static IEnumerable<string> OptionNames
    {
        get
        {
            var symbols = new Symbols();
            return symbols.Settings.Select(s => s.Option.Name).Concat([symbols.ServedModelName.Name, symbols.ApiKey.Name, symbols.EnableAutoToolChoice.Name, symbols.NoPrefixCaching.Name]).ToList();
        }
    }
}

/// <summary>A command line the server cannot start with (unknown option, malformed value); the message names it.</summary>
public sealed class CommandLineException(string message) : Exception(message);
