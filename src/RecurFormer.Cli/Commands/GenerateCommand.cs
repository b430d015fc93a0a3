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
        var maxTokens = new Option<int>("--max-tokens") { Description = "Most tokens to generate.", DefaultValueFactory = _ => 64 };
        var temperature = new Option<double>("--temperature") { Description = "Sampling temperature; 0 is greedy.", DefaultValueFactory = _ => 0 };
        var seed = new Option<long?>("--seed") { Description = "Seed for sampling, for reproducible output." };
        var ignoreEos = new Option<bool>("--ignore-eos") { Description = "Do not stop at the model's end-of-sequence token." };
        var outputIds = new Option<bool>("--output-ids") { Description = "Print the generated token ids, comma-separated, as the last line." };
        var compute = new ComputeOptions();

        var command = new Command("generate", "Complete a prompt with a model.") { model, prompt, promptIds, maxTokens, temperature, seed, ignoreEos, outputIds };
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
            var ids = PromptIds(parse.GetValue(prompt), parse.GetValue(promptIds), tokenizer);

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

    private static CheckpointTokenizer? LoadTokenizerIfPresent(string folder)
    {
        string[] files = ["tokenizer.json", "vocab.json", "tokenizer.model"];
        return files.Any(f => File.Exists(Path.Combine(folder, f))) ? CheckpointTokenizer.FromPretrained(folder) : null;
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
