using System.ComponentModel.DataAnnotations;

namespace RecurFormer.Server.Hosting;

/// <summary>Which checkpoint to serve, under which names, with which template and tool-call format, and where it runs (<c>RecurFormer:Model</c>).</summary>
public sealed class ModelOptions
{
    public const string Section = "RecurFormer:Model";

    /// <summary>Checkpoint folder; empty = the first of <see cref="DefaultCandidates"/> that exists.</summary>
    public string? Path { get; set; }

    /// <summary>
    /// The demo checkpoints, in order of preference, relative to the working directory or any folder above it or
    /// above the application: the RecurFormer demo model once it exists, else its teacher.
    /// </summary>
    public List<string> DefaultCandidates { get; set; } = ["models/dotnet-docs-recurformer-16m", "models/dotnet-docs-qwen2-16m"];

    /// <summary>The id clients put in <c>model</c> (and responses carry); empty = the checkpoint folder's name.</summary>
    public string? ServedModelName { get; set; }

    /// <summary>More names clients may use for the same model (vLLM's extra <c>--served-model-name</c> values).</summary>
    public List<string> ServedModelAliases { get; set; } = [];

    /// <summary>A chat template used instead of the checkpoint's: the template text, or a file holding it.</summary>
    public string? ChatTemplate { get; set; }

    /// <summary>How the model writes tool calls (hermes, llama3_json, mistral); empty = read from the chat template, else hermes.</summary>
    public string? ToolCallParser { get; set; }

    [Required]
    public string Device { get; set; } = "cpu";

    [Required]
    public string DType { get; set; } = "auto";

    [Range(1, 1024)]
    public int? Threads { get; set; }
}
