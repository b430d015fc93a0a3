using System.Text.Json;
using System.Text.Json.Nodes;

namespace RecurFormer.Model.Configuration;

/// <summary>What every causal LM config has, whatever its architecture.</summary>
public abstract record ModelConfig
{
    public required string ModelType { get; init; }
    public required int VocabSize { get; init; }
    public required int HiddenSize { get; init; }
    public required int NumHiddenLayers { get; init; }
    public required bool TieWordEmbeddings { get; init; }
    public int? BosTokenId { get; init; }
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];

    /// <summary>The parsed <c>config.json</c>, kept so that a converted checkpoint can write it back with additions.</summary>
    public required JsonObject Raw { get; init; }

    public static readonly string[] SupportedModelTypes = ["qwen2", "llama", "mistral", "mamba"];

    /// <summary>Reads <c>config.json</c> from a checkpoint folder.</summary>
    public static ModelConfig Load(string folder)
    {
        var path = Path.Combine(folder, "config.json");
        if (!File.Exists(path))
        {
            throw new ModelLoadException($"{folder}: not a checkpoint folder (no config.json)");
        }
        JsonObject raw;
        try
        {
            raw = JsonNode.Parse(File.ReadAllText(path)) as JsonObject
                ?? throw new ModelLoadException($"{path}: not a JSON object");
        }
        catch (JsonException error)
        {
            throw new ModelLoadException($"{path}: invalid JSON ({error.Message})");
        }
        return Parse(raw, path);
    }

    public static ModelConfig Parse(JsonObject raw, string source)
    {
        var reader = new ConfigReader(raw, source);
        var modelType = reader.String("model_type");
        return modelType switch
        {
            "qwen2" or "llama" or "mistral" => TransformerConfig.From(reader, modelType),
            "mamba" => MambaConfig.From(reader),
            _ => throw new ModelLoadException($"{source}: unsupported model_type '{modelType}' (supported: {string.Join(", ", SupportedModelTypes)})"),
        };
    }
}

/// <summary>Qwen2, Llama and Mistral: decoder-only Transformers with RoPE, grouped-query attention, SwiGLU and RMSNorm.</summary>
public sealed record TransformerConfig : ModelConfig
{
    public required int IntermediateSize { get; init; }
    public required int NumAttentionHeads { get; init; }
    public required int NumKeyValueHeads { get; init; }
    public required int HeadDim { get; init; }
    public required double RmsNormEps { get; init; }
    public required RopeConfig Rope { get; init; }
    public required bool QkvBias { get; init; }
    public required bool OutputBias { get; init; }
    public required bool MlpBias { get; init; }
    public required int MaxPositionEmbeddings { get; init; }

    /// <summary>Which KV groups are replaced (Mamba or window); everything kept for a plain HuggingFace checkpoint.</summary>
    public required HybridLayout Hybrid { get; init; }

    /// <summary>Query heads that share one KV head.</summary>
    public int GroupSize => NumAttentionHeads / NumKeyValueHeads;

    /// <summary>The heads and groups of one layer: what attends fully, what through a window, what Mamba computes.</summary>
    public LayerHeads Heads(int layer) => new(this, Hybrid.ForLayer(layer));

    /// <summary>
    /// The Mamba mixer of a layer with Mamba or window-Mamba groups (null otherwise): it reads the layer's normalised
    /// hidden state and writes (or adds to) those groups' query heads, with d_inner = expand × their width. The one
    /// place this is computed.
    /// </summary>
    public MambaMixerShape? MixerShape(int layer)
    {
        var heads = Heads(layer);
        if (heads.MixerGroups.Length == 0)
        {
            return null;
        }
        var spec = Hybrid.Mamba;
        var output = heads.MixerOutputSize;
        return new MambaMixerShape(HiddenSize, output, spec.Expand * output, spec.StateSize, spec.ConvKernel,
            spec.TimeStepRank ?? MambaMixerShape.DefaultTimeStepRank(HiddenSize), UseBias: false, UseConvBias: true);
    }

    /// <summary>
    /// Sliding-window attention of the source model: Mistral's <c>sliding_window</c> becomes a window layout; Qwen2's
    /// per-layer variant (<c>use_sliding_window</c> with <c>max_window_layers</c>) is refused rather than ignored.
    /// </summary>
    private static HybridLayout? SlidingWindowLayout(ConfigReader r, string modelType, int layers, int kvHeads)
    {
        var window = r.OptionalInt("sliding_window");
        if (window is null)
        {
            return null;
        }
        if (modelType == "mistral")
        {
            return HybridLayout.SlidingWindow(layers, kvHeads, window.Value);
        }
        if (r.OptionalBool("use_sliding_window") == true)
        {
            throw new ModelLoadException($"{r.Source}: use_sliding_window with max_window_layers is not supported");
        }
        return null;
    }

    internal static TransformerConfig From(ConfigReader r, string modelType)
    {
        var heads = r.Int("num_attention_heads");
        var hidden = r.Int("hidden_size");
        var kvHeads = r.OptionalInt("num_key_value_heads") ?? heads;
        if (kvHeads <= 0 || heads % kvHeads != 0)
        {
            throw new ModelLoadException($"{r.Source}: num_attention_heads ({heads}) is not a multiple of num_key_value_heads ({kvHeads})");
        }
        var activation = r.OptionalString("hidden_act") ?? "silu";
        if (activation != "silu")
        {
            throw new ModelLoadException($"{r.Source}: unsupported hidden_act '{activation}' (supported: silu)");
        }
        // Qwen2 always has q/k/v biases and no o_proj bias; Llama and Mistral have `attention_bias` for all four.
        var attentionBias = r.OptionalBool("attention_bias") ?? false;
        var layers = r.Int("num_hidden_layers");
        return new TransformerConfig
        {
            ModelType = modelType,
            Raw = r.Raw,
            VocabSize = r.Int("vocab_size"),
            HiddenSize = hidden,
            NumHiddenLayers = r.Int("num_hidden_layers"),
            TieWordEmbeddings = r.OptionalBool("tie_word_embeddings") ?? false,
            BosTokenId = r.OptionalInt("bos_token_id"),
            EosTokenIds = r.IntOrIntList("eos_token_id"),
            IntermediateSize = r.Int("intermediate_size"),
            NumAttentionHeads = heads,
            NumKeyValueHeads = kvHeads,
            HeadDim = r.OptionalInt("head_dim") ?? hidden / heads,
            RmsNormEps = r.OptionalDouble("rms_norm_eps") ?? 1e-6,
            Rope = RopeConfig.From(r),
            QkvBias = modelType == "qwen2" || attentionBias,
            OutputBias = modelType != "qwen2" && attentionBias,
            MlpBias = r.OptionalBool("mlp_bias") ?? false,
            MaxPositionEmbeddings = r.OptionalInt("max_position_embeddings") ?? 2048,
            Hybrid = HybridLayout.Parse(r.Raw, r.Source, layers, kvHeads) ?? SlidingWindowLayout(r, modelType, layers, kvHeads) ?? HybridLayout.Nothing(layers),
        };
    }
}

/// <summary>Rotary position embedding: theta and the scaling type (default, linear, llama3).</summary>
public sealed record RopeConfig(double Theta, string Type, double Factor, double LowFreqFactor, double HighFreqFactor, int OriginalMaxPositions)
{
    internal static RopeConfig From(ConfigReader r)
    {
        // transformers 5 writes `rope_parameters`; earlier checkpoints have top-level `rope_theta` and `rope_scaling`.
        var parameters = r.Raw["rope_parameters"] as JsonObject ?? r.Raw["rope_scaling"] as JsonObject;
        var theta = ReadDouble(parameters, "rope_theta") ?? r.OptionalDouble("rope_theta") ?? 10000.0;
        var type = parameters?["rope_type"]?.GetValue<string>() ?? parameters?["type"]?.GetValue<string>() ?? "default";
        if (type is not ("default" or "linear" or "llama3"))
        {
            throw new ModelLoadException($"{r.Source}: unsupported rope_type '{type}' (supported: default, linear, llama3)");
        }
        return new RopeConfig(
            theta,
            type,
            ReadDouble(parameters, "factor") ?? 1.0,
            ReadDouble(parameters, "low_freq_factor") ?? 1.0,
            ReadDouble(parameters, "high_freq_factor") ?? 4.0,
            (int)(ReadDouble(parameters, "original_max_position_embeddings") ?? 8192));
    }

    private static double? ReadDouble(JsonObject? parameters, string name) =>
        parameters?[name] is JsonValue value && value.TryGetValue<double>(out var number) ? number : null;
}

/// <summary>Mamba-1 as transformers' <c>MambaForCausalLM</c>.</summary>
public sealed record MambaConfig : ModelConfig
{
    public required int StateSize { get; init; }
    public required int IntermediateSize { get; init; }
    public required int ConvKernel { get; init; }
    public required int TimeStepRank { get; init; }
    public required double LayerNormEpsilon { get; init; }
    public required bool UseBias { get; init; }
    public required bool UseConvBias { get; init; }
    public required bool ResidualInFp32 { get; init; }

    /// <summary>Every layer's mixer: the whole hidden state in and out.</summary>
    public MambaMixerShape MixerShape => new(HiddenSize, HiddenSize, IntermediateSize, StateSize, ConvKernel, TimeStepRank, UseBias, UseConvBias);

    internal static MambaConfig From(ConfigReader r)
    {
        var hidden = r.Int("hidden_size");
        var expand = r.OptionalInt("expand") ?? 2;
        var rank = r.Raw["time_step_rank"] is JsonValue v && v.TryGetValue<int>(out var given) ? given : MambaMixerShape.DefaultTimeStepRank(hidden);
        var activation = r.OptionalString("hidden_act") ?? "silu";
        if (activation != "silu")
        {
            throw new ModelLoadException($"{r.Source}: unsupported hidden_act '{activation}' (supported: silu)");
        }
        return new MambaConfig
        {
            ModelType = "mamba",
            Raw = r.Raw,
            VocabSize = r.Int("vocab_size"),
            HiddenSize = hidden,
            NumHiddenLayers = r.Int("num_hidden_layers"),
            TieWordEmbeddings = r.OptionalBool("tie_word_embeddings") ?? true,
            BosTokenId = r.OptionalInt("bos_token_id"),
            EosTokenIds = r.IntOrIntList("eos_token_id"),
            StateSize = r.OptionalInt("state_size") ?? 16,
            IntermediateSize = r.OptionalInt("intermediate_size") ?? expand * hidden,
            ConvKernel = r.OptionalInt("conv_kernel") ?? 4,
            TimeStepRank = rank,
            LayerNormEpsilon = r.OptionalDouble("layer_norm_epsilon") ?? 1e-5,
            UseBias = r.OptionalBool("use_bias") ?? false,
            UseConvBias = r.OptionalBool("use_conv_bias") ?? true,
            ResidualInFp32 = r.OptionalBool("residual_in_fp32") ?? true,
        };
    }
}

/// <summary>Typed access to config.json members with errors that name the file and the member.</summary>
internal sealed class ConfigReader(JsonObject raw, string source)
{
    public JsonObject Raw { get; } = raw;
    public string Source { get; } = source;

    public string String(string name) => OptionalString(name) ?? throw Missing(name);
    public int Int(string name) => OptionalInt(name) ?? throw Missing(name);

    public string? OptionalString(string name) => Read(name, n => n.GetValue<string>(), "a string");
    public int? OptionalInt(string name) => Read(name, n => checked((int)n.GetValue<double>()), "an integer");
    public double? OptionalDouble(string name) => Read(name, n => n.GetValue<double>(), "a number");
    public bool? OptionalBool(string name) => Read(name, n => n.GetValue<bool>(), "true or false");

    public IReadOnlyList<int> IntOrIntList(string name) => Raw[name] switch
    {
        null => [],
        JsonArray list => list.Select(item => item!.GetValue<int>()).ToArray(),
        _ => [Int(name)],
    };

    private T? Read<T>(string name, Func<JsonNode, T> read, string expected) where T : struct
    {
        var node = Raw[name];
        if (node is null)
        {
            return null;
        }
        try
        {
            return read(node);
        }
        catch (Exception error) when (error is InvalidOperationException or FormatException or OverflowException)
        {
            throw new ModelLoadException($"{Source}: '{name}' must be {expected}, not {node.ToJsonString()}");
        }
    }

    private string? Read(string name, Func<JsonNode, string> read, string expected)
    {
        var node = Raw[name];
        if (node is null)
        {
            return null;
        }
        try
        {
            return read(node);
        }
        catch (Exception error) when (error is InvalidOperationException or FormatException)
        {
            throw new ModelLoadException($"{Source}: '{name}' must be {expected}, not {node.ToJsonString()}");
        }
    }

    private ModelLoadException Missing(string name) => new($"{Source}: missing '{name}'");
}
