using RecurFormer.Engine;
using RecurFormer.Server.Tools;
using RecurFormer.StructuredOutput.Matching;
using RecurFormer.Templates.ChatTemplates;
using RecurFormer.Tokenization;

namespace RecurFormer.Server.Hosting;

public enum ServingState { Starting, Ready, Draining, Stopped, Failed }

/// <summary>
/// The served model once loaded: engine, tokenizer, chat template (null when the checkpoint has none) and the
/// serving state that health checks and the <c>/v1</c> gate read. Endpoints ask <see cref="TryGet"/> and answer
/// 503 while it is false.
/// </summary>
public sealed class ModelHost
{
    private volatile ServingState _state = ServingState.Starting;
    private volatile LoadedModel? _model;
    private readonly TaskCompletionSource<bool> _loaded = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Completes when loading ends: true when the model serves, false when it failed or shutdown came first.</summary>
    public Task<bool> Loaded => _loaded.Task;

    public ServingState State => _state;

    public LoadedModel? Model => _model;

    /// <summary>The model, when it is loaded and the engine takes requests.</summary>
    public bool TryGet(out LoadedModel model)
    {
        model = _model!;
        return _state == ServingState.Ready && model is not null && model.Engine.IsRunning;
    }

    internal void SetLoaded(LoadedModel model)
    {
        _model = model;
        _state = ServingState.Ready;
        _loaded.TrySetResult(true);
    }

    internal void SetState(ServingState state)
    {
        _state = state;
        if (state is ServingState.Failed or ServingState.Stopped)
        {
            _loaded.TrySetResult(false);
        }
    }
}

/// <summary>
/// Holds model loading back until its task completes. Registered only by tests that need to observe the
/// "starting" state deterministically; the server itself never registers one.
/// </summary>
public sealed class ModelLoadGate(Task open)
{
    public Task Open { get; } = open;
}

/// <summary>Everything the endpoints need about the served checkpoint.</summary>
public sealed record LoadedModel(
    string Id,
    string Folder,
    LLMEngine Engine,
    CheckpointTokenizer Tokenizer,
    ChatTemplate? ChatTemplate,
    string? ChatTemplateError,
    DateTimeOffset LoadedAt)
{
    private readonly Lazy<GrammarCache> _grammars = new(() => new GrammarCache(TokenVocabulary.FromTokenizer(Tokenizer)));

    /// <summary>More names clients may use in <c>model</c>.</summary>
    public IReadOnlyList<string> Aliases { get; init; } = [];

    /// <summary>How this model writes tool calls.</summary>
    public ToolCallFormat ToolFormat { get; init; } = ToolCallFormat.Hermes;

    /// <summary>
    /// Compiled structured-output grammars over this tokenizer's vocabulary (the token trie is built on first use:
    /// servers that never see a schema never pay for it).
    /// </summary>
    public GrammarCache Grammars => _grammars.Value;

    /// <summary>Special tokens whose text the tool-call parser must see (Mistral's [TOOL_CALLS], Llama's &lt;|python_tag|&gt;), by id.</summary>
    public IReadOnlyDictionary<int, string> ToolMarkerTokens { get; init; } = new Dictionary<int, string>();

    public bool Serves(string name) => name == Id || Aliases.Contains(name);
}
