namespace RecurFormer.Toolkit.Distillation;

/// <summary>Which student parameters train in stage 2 (stage 1 always trains only the Mamba mixers).</summary>
[Flags]
public enum TrainedParts
{
    Mamba = 1,
    OutputProjection = 2,
    Attention = 4,
    All = 8,
}

/// <summary>Hyper-parameters of a distillation run.</summary>
public sealed record DistillOptions
{
    public int Stage1Steps { get; init; } = 200;
    public int Stage2Steps { get; init; } = 200;

    /// <summary>Sequences per step.</summary>
    public int BatchSize { get; init; } = 4;

    /// <summary>Tokens per training sequence (cut from the packed training stream).</summary>
    public int SequenceLength { get; init; } = 256;

    /// <summary>
    /// Tokens per sequence in stage 2 (each training sequence's first tokens). Stage 2 runs the whole student, whose
    /// Mamba prefill scan is costly to differentiate on a CPU; a shorter length keeps its steps affordable there.
    /// </summary>
    public int Stage2SequenceLength { get; init; } = 128;

    public double Stage1LearningRate { get; init; } = 3e-3;
    public double Stage2LearningRate { get; init; } = 5e-4;
    public int WarmupSteps { get; init; } = 10;
    public double WeightDecay { get; init; } = 0.0;
    public double ClipNorm { get; init; } = 1.0;

    /// <summary>Stage 2 loss = KlWeight × KL(teacher ‖ student) + CeWeight × next-token cross-entropy.</summary>
    public double KlWeight { get; init; } = 1.0;
    public double CeWeight { get; init; } = 1.0;

    public TrainedParts Stage2Train { get; init; } = TrainedParts.Mamba;

    /// <summary>
    /// Stage 2's weight of the positions that predict an assistant answer's first <see cref="AnswerTokens"/> tokens
    /// (<see cref="AnswerWeighting"/>; KL and CE alike, each a weighted mean); 1: every position alike.
    /// </summary>
    public double AnswerWeight { get; init; } = 1.0;

    /// <summary>How many of an answer's first tokens <see cref="AnswerWeight"/> covers.</summary>
    public int AnswerTokens { get; init; } = 16;

    /// <summary>
    /// The teacher's compute dtype; null: the student's (float32). The teacher only runs forward, so bfloat16 costs it
    /// no master weights, and on a CPU with bfloat16 instructions its forward takes half the time.
    /// </summary>
    public TorchSharp.torch.ScalarType? TeacherDType { get; init; }

    /// <summary>
    /// dtype of the big matrix products, forward and backward; null: float32. Stage 1: the mixers' in_proj and out_proj
    /// and the loss's projection. Stage 2: the whole student, through copies in this dtype (<see cref="StudentReplica"/>). The trained
    /// weights, their optimiser state and checkpoints stay float32 either way.
    /// </summary>
    public TorchSharp.torch.ScalarType? MatmulDType { get; init; }

    /// <summary>
    /// Folder of the teacher's top-k stage-2 targets (<see cref="TeacherLogitCache"/>); null: the teacher runs every
    /// step and the KL covers the whole vocabulary.
    /// </summary>
    public string? TeacherCache { get; init; }

    /// <summary>Tokens per position kept in the teacher cache (the KL's buckets, plus one for the rest).</summary>
    public int TeacherTopK { get; init; } = 64;
    public long Seed { get; init; } = 0;

    /// <summary>
    /// Workers that each run a share of every batch on their own thread, with their own teacher and student copy
    /// (<see cref="DistillTeam"/>); their gradients are summed, so the batch, the losses and (up to rounding) the
    /// steps are those of one worker. For the CPU, with one libtorch thread each.
    /// </summary>
    public int Workers { get; init; } = 1;

    /// <summary>Write a resumable checkpoint every this many steps (and at the end of each stage).</summary>
    public int CheckpointEvery { get; init; } = 50;

    /// <summary>
    /// The options that set a run's course: its schedule, batches, losses and seed, by property name (as in
    /// distill.json's options). A checkpoint keeps them, and a resumed run must ask for the same: one that forgot a
    /// flag would otherwise go on under another schedule, or end at once and overwrite the run's result. How the
    /// steps are computed (workers, dtypes, the teacher cache) and how often to checkpoint may change on resuming.
    /// </summary>
    public IReadOnlyDictionary<string, string> Recipe() => new SortedDictionary<string, string>(StringComparer.Ordinal)
    {
        [nameof(Stage1Steps)] = Text(Stage1Steps),
        [nameof(Stage2Steps)] = Text(Stage2Steps),
        [nameof(BatchSize)] = Text(BatchSize),
        [nameof(SequenceLength)] = Text(SequenceLength),
        [nameof(Stage2SequenceLength)] = Text(Stage2SequenceLength),
        [nameof(Stage1LearningRate)] = Text(Stage1LearningRate),
        [nameof(Stage2LearningRate)] = Text(Stage2LearningRate),
        [nameof(WarmupSteps)] = Text(WarmupSteps),
        [nameof(WeightDecay)] = Text(WeightDecay),
        [nameof(ClipNorm)] = Text(ClipNorm),
        [nameof(KlWeight)] = Text(KlWeight),
        [nameof(CeWeight)] = Text(CeWeight),
        [nameof(Stage2Train)] = Stage2Train.ToString(),
        [nameof(AnswerWeight)] = Text(AnswerWeight),
        [nameof(AnswerTokens)] = Text(AnswerTokens),
        [nameof(Seed)] = Text(Seed),
    };

    /// <summary>
    /// How this run's recipe differs from a checkpoint's (<see cref="Recipe"/>), by option name; empty when they agree.
    /// An option the checkpoint does not name (an older version's) is not compared.
    /// </summary>
    public IReadOnlyList<RecipeDifference> RecipeDifferences(IReadOnlyDictionary<string, string> checkpoint)
    {
        var asked = Recipe();
        return checkpoint.Where(entry => asked.TryGetValue(entry.Key, out var value) && value != entry.Value)
            .OrderBy(entry => entry.Key, StringComparer.Ordinal)
            .Select(entry => new RecipeDifference(entry.Key, entry.Value, asked[entry.Key]))
            .ToArray();
    }

    private static string Text(IFormattable value) => value.ToString(null, System.Globalization.CultureInfo.InvariantCulture);
}

/// <summary>One option of a run's recipe whose value in a checkpoint is not the one asked for now.</summary>
public sealed record RecipeDifference(string Name, string Checkpoint, string Asked)
{
    public override string ToString() => $"{Name}: the checkpoint's {Checkpoint}, asked for {Asked}";
}
