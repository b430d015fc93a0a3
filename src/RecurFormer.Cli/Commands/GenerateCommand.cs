using System.CommandLine;
using System.Text;
using RecurFormer.Model.CausalLM;
using RecurFormer.Model.Generation;
using RecurFormer.Tokenization;

namespace RecurFormer.Cli.Commands;

/// <summary>
/// <c>recurformer generate</c>: complete a prompt with a checkpoint, greedily unless --temperature says otherwise.
/// The text is printed as it is generated; --output-ids adds the generated ids as the last line.
/// </summary>
public static class GenerateCommand
{
    public const string DefaultModel = "models/dotnet-docs-qwen2-16m";

    public static Command Create()
    {
        var model = new Option<string>("--model", "-m") { Description = "Checkpoint folder (HuggingFace or RecurFormer format).", DefaultValueFactory = _ => DefaultModel };
        var prompt = new Argument<string?>("prompt") { Description = "Prompt text, tokenized as-is (special tokens such as <|im_start|> are recognised).", Arity = ArgumentArity.ZeroOrOne };
        var promptIds = new Option<string?>("--prompt-ids") { Description = "Prompt as comma-separated token ids, for models without a tokenizer." };
        var messages = new Option<string?>("--messages") { Description = "A JSON file with OpenAI-style messages ([{\"role\":...,\"content\":...}], or {\"messages\": [...], \"tools\": [...]}), rendered with the checkpoint's chat template." };
        var maxTokens = new Option<int>("--max-tokens") { Description = "Most tokens to generate.", DefaultValueFactory = _ => 64 };
        var temperature = new Option<double>("--temperature") { Description = "Sampling temperature; 0 is greedy.", DefaultValueFactory = _ => 0 };
        var seed = new Option<long?>("--seed") { Description = "Seed for sampling, for reproducible output." };
        var ignoreEos = new Option<bool>("--ignore-eos") { Description = "Do not stop at the model's end-of-sequence token." };
        var outputIds = new Option<bool>("--output-ids") { Description = "Print the generated token ids, comma-separated, as the last line." };
        var compute = new ComputeOptions();

        var command = new Command("generate", "Complete a prompt with a model.") { model, prompt, promptIds, messages, maxTokens, temperature, seed, ignoreEos, outputIds };
        compute.AddTo(command);
        command.SetAction(parse =>
        {
            var folder = parse.GetValue(model)!;
            var max = parse.GetValue(maxTokens);
            if (max < 1)
            {
                throw new UserError($"--max-tokens must be at least 1, not {max}");
            }
            var temperatureValue = parse.GetValue(temperature);
            if (temperatureValue < 0 || double.IsNaN(temperatureValue))
            {
                throw new UserError($"--temperature must be 0 or more, not {temperatureValue}");
            }
            // The config first: a folder that is not a checkpoint is the first thing to say.
            _ = Model.Configuration.ModelConfig.Load(folder);
            var tokenizer = LoadTokenizerIfPresent(folder);
            var ids = parse.GetValue(messages) is { } messagesFile
                ? ChatPromptIds(folder, messagesFile, parse.GetValue(prompt) ?? parse.GetValue(promptIds), tokenizer)
                : PromptIds(parse.GetValue(prompt), parse.GetValue(promptIds), tokenizer);

            var target = compute.Initialize(parse);
            using var lm = CausalLMLoader.FromPretrained(folder, target);
            var stopIds = parse.GetValue(ignoreEos)
                ? new HashSet<int>()
                : (tokenizer?.EosTokenIds ?? lm.Config.EosTokenIds).ToHashSet();
            var outside = ids.Where(id => id < 0 || id >= lm.Config.VocabSize).Select(id => (int?)id).FirstOrDefault();
            if (outside is not null)
            {
                throw new UserError($"prompt token id {outside} is outside the vocabulary of {folder} (0..{lm.Config.VocabSize - 1})");
            }

            var generated = new List<int>();
            var detokenizer = tokenizer?.CreateDetokenizer();
            var stdout = new StreamWriter(Console.OpenStandardOutput(), new UTF8Encoding(false)) { AutoFlush = true };
            foreach (var token in new SimpleGenerator(lm).Generate(ids, max, stopIds, new SamplingOptions(temperatureValue, parse.GetValue(seed))))
            {
                generated.Add(token);
                if (detokenizer is not null && !stopIds.Contains(token))
                {
                    stdout.Write(detokenizer.Add(token));
                }
            }
            if (detokenizer is not null)
            {
                stdout.Write(detokenizer.Flush());
            }
            if (parse.GetValue(outputIds))
            {
                if (detokenizer is not null)
                {
                    stdout.Write('\n');
                }
                stdout.Write(string.Join(",", generated));
            }
            stdout.Write('\n');
            return 0;
        });
        return command;
    }

    /// <summary>The checkpoint's tokenizer, or null for a checkpoint without tokenizer files (prompts as ids then).</summary>
    public static CheckpointTokenizer? LoadTokenizerIfPresent(string folder)
    {
        string[] files = ["tokenizer.json", "vocab.json", "tokenizer.model"];
        return files.Any(f => File.Exists(Path.Combine(folder, f))) ? CheckpointTokenizer.FromPretrained(folder) : null;
    }

    /// <summary>Messages rendered by the checkpoint's chat template (with the generation prompt), then tokenized without BOS: the template writes it.</summary>
    private static int[] ChatPromptIds(string folder, string file, string? otherPrompt, CheckpointTokenizer? tokenizer)
    {
        if (otherPrompt is not null)
        {
            throw new UserError("give the prompt either as text, with --prompt-ids or with --messages, not several");
        }
        if (tokenizer is null)
        {
            throw new UserError("--messages needs a checkpoint with a tokenizer");
        }
        if (!File.Exists(file))
        {
            throw new UserError($"{file}: file not found");
        }
        System.Text.Json.JsonDocument document;
        try
        {
            document = System.Text.Json.JsonDocument.Parse(File.ReadAllText(file));
        }
        catch (System.Text.Json.JsonException error)
        {
            throw new UserError($"{file}: invalid JSON ({error.Message})");
        }
        using (document)
        {
            var root = document.RootElement;
            var (list, tools) = root.ValueKind == System.Text.Json.JsonValueKind.Object && root.TryGetProperty("messages", out var inner)
                ? (inner, root.TryGetProperty("tools", out var t) ? t : (System.Text.Json.JsonElement?)null)
                : (root, null);
            try
            {
                var template = Templates.ChatTemplates.ChatTemplateLoader.Load(folder);
                var text = template.Render(list, tools, addGenerationPrompt: true);
                return tokenizer.Encode(text, addBosToken: false);
            }
            catch (Exception error) when (error is Templates.ChatTemplates.ChatTemplateNotFoundException or Templates.ChatTemplates.ChatInputException or Templates.TemplateException)
            {
                throw new UserError($"{file}: {error.Message}");
            }
        }
    }

    private static int[] PromptIds(string? text, string? ids, CheckpointTokenizer? tokenizer)
    {
        if ((text is null) == (ids is null))
        {
            throw new UserError("give the prompt either as text or with --prompt-ids, not both and not neither");
        }
        if (ids is not null)
        {
            var parts = ids.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
            var parsed = new int[parts.Length];
            for (var i = 0; i < parts.Length; i++)
            {
                if (!int.TryParse(parts[i], out parsed[i]))
                {
                    throw new UserError($"--prompt-ids: '{parts[i]}' is not a token id");
                }
            }
            return parsed.Length > 0 ? parsed : throw new UserError("--prompt-ids is empty");
        }
        if (tokenizer is null)
        {
            throw new UserError("this checkpoint has no tokenizer files (tokenizer.json, vocab.json, tokenizer.model): give the prompt with --prompt-ids");
        }
        var encoded = tokenizer.Encode(text!);
        return encoded.Length > 0 ? encoded : throw new UserError("the prompt is empty");
    }
}
