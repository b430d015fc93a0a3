using RecurFormer.Model.CausalLM;
using RecurFormer.Model.Configuration;
using RecurFormer.Model.Kernels;
using RecurFormer.Model.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace RecurFormer.Toolkit.Distillation;

/// <summary>One layer's Mamba mixer, the heads it replaces, and how stage 1's loss weights their error by o_proj's columns.</summary>
internal sealed record ReplacedLayer(int Layer, MambaMixer Mixer, MixerFunction Function, long[] Heads, int HeadDim, ErrorWeight Weight);

/// <summary>
/// The two losses of the method and one optimiser step of each:
/// stage 1, layer-local: every Mamba mixer reads the teacher's attention input of its layer (teacher forcing) and
/// is fitted to the teacher's replaced head outputs as o_proj sees them (the error after o_proj, so that directions
/// o_proj ignores cost nothing), relative to the teacher's contribution; stage 2, end to end: KL(teacher ‖ student)
/// on the next-token distributions plus the next-token cross-entropy on the training text.
/// </summary>
public sealed class Distiller : IDisposable
{
    private readonly ICausalLM _teacher;
    private readonly TransformerCausalLM _student;
    private readonly DistillOptions _options;
    private readonly List<ReplacedLayer> _layers = [];

    public Distiller(ICausalLM teacher, ICausalLM student, DistillOptions options)
    {
        _teacher = teacher;
        _student = student as TransformerCausalLM
            ?? throw new ArgumentException("the student must be a converted Transformer (recurformer convert --kind mamba)");
        _options = options;
        if (Stage1Refusal((TransformerConfig)_student.Config, options.Stage1Steps) is { } refusal)
        {
            throw new ArgumentException(refusal);
        }
        for (var layer = 0; layer < _student.Layers.Count; layer++)
        {
            var attention = _student.Layers[layer].SelfAttention;
            if (attention.Mamba is not { } mixer)
            {
                continue;
            }
            var heads = attention.Heads;
            var replaced = heads.HeadsOf(heads.MixerGroups).Select(h => (long)h).ToArray();
            var columns = replaced.SelectMany(h => Enumerable.Range((int)h * heads.HeadDim, heads.HeadDim)).Select(c => (long)c).ToArray();
            var outputWeight = attention.OutputProjection.Weight;
            using var selected = outputWeight.detach().index_select(1, tensor(columns, device: outputWeight.device));
            var matmul = options.MatmulDType ?? ScalarType.Float32;
            _layers.Add(new ReplacedLayer(layer, mixer, new MixerFunction(mixer, matmul), replaced, heads.HeadDim, ErrorWeight.For(selected, matmul)));
        }
        if (_layers.Count == 0)
        {
            throw new ArgumentException("the student has no Mamba mixer: nothing to distill (convert with --kind mamba or window-mamba)");
        }
        _sharedLayers = teacher is TransformerCausalLM transformer ? _student.SameLayersAs(transformer) : 0;
        _sharedParameters = [_student.EmbeddingWeight, .. _student.Layers.Take(_sharedLayers).SelectMany(l => l.parameters())];
    }

    /// <summary>The student's leading layers that are the teacher's (<see cref="TransformerCausalLM.SameLayersAs"/>), and their weights.</summary>
    private readonly int _sharedLayers;
    private readonly Tensor[] _sharedParameters;

    public IReadOnlyList<int> Layers => _layers.Select(l => l.Layer).ToArray();

    /// <summary>Threads for the CPU kernels of this distiller's forwards and mixers (a worker's own); null: the process's.</summary>
    public KernelThreads? Threads { get; init; }

    /// <summary>
    /// Why a student cannot run <paramref name="stage1Steps"/> steps of stage 1, or null: stage 1's target is the
    /// teacher's output of the replaced heads, and a window-Mamba mixer only adds what the window misses, a target
    /// stage 1 does not compute. Reads the config alone, so that the CLI can refuse before loading any weight.
    /// </summary>
    public static string? Stage1Refusal(TransformerConfig student, int stage1Steps) =>
        stage1Steps > 0 && student.Hybrid.Layers.Any(l => l.WindowMambaGroups.Count > 0)
            ? "a window-mamba student trains end to end only: give --stage1-steps 0"
            : null;

    /// <summary>Parameters trained in stage 1: the Mamba mixers.</summary>
    public IReadOnlyList<Parameter> Stage1Parameters() => _layers.SelectMany(l => l.Mixer.parameters()).ToArray();

    /// <summary>
    /// Parameters trained in stage 2: the Mamba mixers, the o_proj of every layer, every attention block (kept heads'
    /// q/k/v, o_proj and the mixer), or the whole model.
    /// </summary>
    public IReadOnlyList<Parameter> Stage2Parameters(TrainedParts parts)
    {
        if (parts.HasFlag(TrainedParts.All))
        {
            return _student.parameters().ToArray();
        }
        var attention = _student.Layers.Select(l => l.SelfAttention).ToArray();
        IEnumerable<nn.Module> modules = parts.HasFlag(TrainedParts.Attention)
            ? attention
            : [
                .. parts.HasFlag(TrainedParts.Mamba) ? attention.Select(a => a.Mamba).OfType<nn.Module>() : [],
                .. parts.HasFlag(TrainedParts.OutputProjection) ? attention.Select(a => a.OutputProjection) : [],
            ];
        return modules.SelectMany(m => m.parameters()).ToArray();
    }

    /// <summary>Stage-1 loss and gradients for one batch; returns the mean relative loss over layers and each layer's.</summary>
    public (double Loss, Dictionary<int, double> PerLayer) Stage1Backward(IReadOnlyList<long[]> sequences)
    {
        using var targets = Stage1Teacher(sequences);
        var perLayer = Stage1Backward(targets, Stage1Targets.Reference([targets]));
        return (perLayer.Values.Average(), perLayer);
    }

    /// <summary>
    /// Stage 1's first half: the teacher's forward over <paramref name="sequences"/> (one share of a batch), kept as
    /// each replaced layer's input and target, with the energy of the targets for the loss's reference.
    /// </summary>
    public Stage1Targets Stage1Teacher(IReadOnlyList<long[]> sequences)
    {
        if (sequences.Any(s => s.Length != sequences[0].Length))
        {
            throw new ArgumentException("stage 1 trains on sequences of equal length");
        }
        using var scope = NewDisposeScope();
        using var capture = new AttentionCapture { RecordsProbabilities = false, RecordsLayers = true };
        using (var teacherCaches = _teacher.CreateCache(sequences.Max(s => s.Length), sequences.Count))
        {
            _teacher.Forward(new ForwardBatch(sequences, teacherCaches.Sequences) { Capture = capture, LastLayer = _layers[^1].Layer, Threads = Threads });
        }
        var matmul = _options.MatmulDType ?? ScalarType.Float32;
        var layers = new List<Stage1Targets.Layer>();
        foreach (var layer in _layers)
        {
            // The input only feeds the mixer's products: kept in their dtype (a bfloat16 teacher's, as computed). The
            // target is compared with the mixer's float32 output.
            var input = capture.LayerInput(layer.Layer).to_type(matmul);
            // The replaced heads' rows (whole heads: index_select along a column dimension copies element by element).
            var all = capture.HeadOutputs(layer.Layer);
            var selected = all.reshape(all.shape[0], -1, layer.HeadDim).index_select(1, tensor(layer.Heads, device: input.device)).view(all.shape[0], -1);
            var target = selected.to_type(ScalarType.Float32);
            using var _ = no_grad();
            // Σ of (target · columnsᵀ)², the target as o_proj sees it, as the loss measures errors (ErrorWeight).
            var energy = layer.Weight.Apply(selected).Squares;
            layers.Add(new Stage1Targets.Layer(layer.Layer, input, target, energy, target.shape[0] * _student.Config.HiddenSize));
        }
        // Only now out of the scope: if a layer failed above, the scope frees what the earlier ones made.
        foreach (var layer in layers)
        {
            layer.Input.DetachFromDisposeScope();
            layer.Target.DetachFromDisposeScope();
        }
        return new Stage1Targets(sequences.Count, layers);
    }

    /// <summary>
    /// Stage 1's second half: each mixer's loss on its share of the batch and its gradients, one layer at a time
    /// (<see cref="Stage1LayerGradients"/>, added with <see cref="Stage1Norm"/>). Returns each layer's part.
    /// </summary>
    public Dictionary<int, double> Stage1Backward(Stage1Targets targets, IReadOnlyDictionary<int, (double Energy, long Elements)> reference) =>
        Enumerable.Range(0, _layers.Count).ToDictionary(i => _layers[i].Layer, i =>
        {
            using var gradients = Stage1LayerGradients(targets, i, Threads);
            return gradients.AddTo(Stage1Norm(i, reference));
        });

    /// <summary>
    /// The loss of the <paramref name="position"/>-th replaced layer's mixer on its share of the batch, and its
    /// gradients, for norm 1: <see cref="Stage1Gradients.AddTo"/> with <see cref="Stage1Norm"/> adds them. The loss is
    /// the squared error after o_proj (so that directions o_proj ignores cost nothing) relative to the teacher's
    /// contribution over the whole batch; a share's parts sum to the batch's loss. Layers are independent given the
    /// teacher's targets, so different layers of one distiller may run on different threads at once
    /// (<see cref="DistillTeam"/> balances its workers so); <paramref name="threads"/> are the calling worker's kernel threads.
    /// </summary>
    public Stage1Gradients Stage1LayerGradients(Stage1Targets targets, int position, KernelThreads? threads)
    {
        var (layer, data) = (_layers[position], targets.Layers[position]);
        // The mean over layers, as the step's loss is: each layer's gradients scaled by 1 / layers.
        return layer.Function.Stage1ForUnitNorm(data.Input, targets.Sequences, data.Target, layer.Weight, 1.0 / _layers.Count, threads);
    }

    /// <summary>The <paramref name="position"/>-th replaced layer's norm: the energy of its targets over the whole batch (<paramref name="reference"/>), at least 1e-12 per value.</summary>
    public double Stage1Norm(int position, IReadOnlyDictionary<int, (double Energy, long Elements)> reference)
    {
        var (energy, elements) = reference[_layers[position].Layer];
        return Math.Max(energy / elements, 1e-12) * elements;
    }

    /// <summary>
    /// When set, stage 2's KL is taken over the teacher's top-k tokens plus one bucket for the rest of the vocabulary,
    /// with the teacher's top-k read from (or written to) this cache; otherwise over the whole vocabulary.
    /// </summary>
    public TeacherLogitCache? TeacherCache { get; init; }

    /// <summary>Whether stage 2's student starts from the teacher's stream where its layers below are the teacher's (false: from its embedding, for tests).</summary>
    internal bool ShareTeacherLayers { get; init; } = true;

    /// <summary>Whether stage 2's losses take <see cref="DistillationLossFunction"/> where it runs (false: the libtorch form, for tests).</summary>
    internal bool LossKernels { get; init; } = true;

    /// <summary>Stage 2's weights of the positions that predict an answer's first tokens; null: every position alike.</summary>
    public AnswerWeighting? AnswerWeighting { get; init; }

    /// <summary>
    /// Stage-2 loss and gradients for one batch: (total, KL, CE), through this distiller's student (a worker's replica
    /// when the student is a <see cref="StudentReplica"/>'s model). <paramref name="streamIndices"/>:
    /// each sequence's index in the training stream (the teacher cache's key). <paramref name="batch"/>: the whole
    /// batch when <paramref name="sequences"/> is one share of it: the means are then taken over the batch's tokens,
    /// so that the shares' losses and gradients sum to the batch's.
    /// </summary>
    public (double Loss, double Kl, double Ce) Stage2Backward(IReadOnlyList<long[]> sequences, IReadOnlyList<long>? streamIndices = null,
        IReadOnlyList<long[]>? batch = null)
    {
        var clock = new Stage2Clock();
        (double Loss, double Kl, double Ce) result;
        using (NewDisposeScope())      // (its disposal, the step's tensors freed, is timed with the backward)
        {
            result = Stage2Step(sequences, streamIndices, batch, clock);
        }
        LastStage2Times = clock.Times();
        return result;
    }

    /// <summary>Where the last <see cref="Stage2Backward"/> spent its time (the run's profile, distill.json).</summary>
    public Stage2Times LastStage2Times { get; private set; }

    private (double Loss, double Kl, double Ce) Stage2Step(IReadOnlyList<long[]> sequences, IReadOnlyList<long>? streamIndices,
        IReadOnlyList<long[]>? batch, Stage2Clock clock)
    {
        // Without the teacher cache the teacher runs first, and leaves its residual stream where the student's layers
        // stop being its own: the student's forward starts there.
        using var handoff = TeacherCache is null ? SharedStream() : null;
        // Both in the LM head's dtype: the loss kernels read bfloat16 rows; the libtorch form converts them itself.
        var teacherLogits = TeacherCache is null ? Logits(_teacher, sequences, training: false, asComputed: true, leave: handoff) : null;
        clock.TeacherDone();
        var studentLogits = Logits(_student, sequences, training: true, asComputed: true, startFrom: handoff);
        clock.StudentDone();
        var (kl, ce) = LossKernels && DistillationLossFunction.Supports(studentLogits)
            ? KernelLosses(sequences, streamIndices, studentLogits, teacherLogits)
            : LibTorchLosses(sequences, streamIndices, studentLogits, teacherLogits);
        var device = studentLogits.device;
        batch ??= sequences;
        Tensor meanKl, meanCe;
        if (AnswerWeighting is { } answers)
        {
            // Weighted means, over the whole batch's weights (so that the shares still sum to the batch's loss).
            var weights = tensor(sequences.SelectMany(answers.Of).ToArray(), device: device);
            var batchWeights = batch.Select(answers.Of).ToArray();
            meanKl = (kl * weights).sum() / batchWeights.Sum(w => (double)w.Sum());
            meanCe = (ce * weights).sum() / batchWeights.Sum(w => (double)w.SkipLast(1).Sum());
        }
        else
        {
            meanKl = kl.sum() / batch.Sum(s => s.Length);                      // KL per position, every position
            meanCe = ce.sum() / batch.Sum(s => Math.Max(0, s.Length - 1));    // CE per next-token target
        }
        var loss = _options.KlWeight * meanKl + _options.CeWeight * meanCe;
        clock.LossesDone();
        loss.backward();
        return (loss.item<float>(), meanKl.item<float>(), meanCe.item<float>());
    }

    /// <summary>
    /// A handoff at the student's first layer that is not the teacher's, while the layers below it are untrained
    /// (stage 2 trains the mixers alone by default); null where there is none.
    /// </summary>
    private ResidualHandoff? SharedStream() =>
        ShareTeacherLayers && _sharedLayers > 0 && !_sharedParameters.Any(p => p.requires_grad) ? new ResidualHandoff(_sharedLayers) : null;

    /// <summary>
    /// KL and CE per position ([T] each; CE 0 at each sequence's last position, which has no next token) through the
    /// loss kernels: one pass over the logits forward and one backward. <paramref name="teacherLogits"/>: the
    /// teacher's whole logits, where there is no teacher cache.
    /// </summary>
    private (Tensor Kl, Tensor Ce) KernelLosses(IReadOnlyList<long[]> sequences, IReadOnlyList<long>? streamIndices, Tensor studentLogits, Tensor? teacherLogits)
    {
        var threads = Threads ?? KernelThreads.ForThisProcess;
        var targets = NextTokens(sequences);
        Tensor losses;
        if (TeacherCache is { } cache)
        {
            var (top, ids) = TeacherTopK(cache, sequences, streamIndices);
            losses = DistillationLossFunction.TopK(studentLogits, top, ids, targets, threads);
        }
        else
        {
            losses = DistillationLossFunction.Full(studentLogits, teacherLogits!, targets, threads);
        }
        return (losses.select(1, 0), losses.select(1, 1));
    }

    /// <summary>Each packed position's next token, −1 at a sequence's last.</summary>
    private static long[] NextTokens(IReadOnlyList<long[]> sequences)
    {
        var targets = new long[sequences.Sum(s => s.Length)];
        Array.Fill(targets, -1);
        var (rows, next) = Data.NextTokenTargets.Of(sequences);
        for (var i = 0; i < rows.Length; i++)
        {
            targets[rows[i]] = next[i];
        }
        return targets;
    }

    /// <summary>The same losses in libtorch operations, where the kernels do not run (a GPU, or a CPU without AVX-512).</summary>
    private (Tensor Kl, Tensor Ce) LibTorchLosses(IReadOnlyList<long[]> sequences, IReadOnlyList<long>? streamIndices, Tensor studentLogits, Tensor? teacherLogits)
    {
        var studentLog = nn.functional.log_softmax(studentLogits.to_type(ScalarType.Float32), 1);
        var kl = TeacherCache is { } cache
            ? TopKDivergence(cache, sequences, streamIndices, studentLog)
            : FullDivergence(teacherLogits!, studentLog);
        var (rows, targets) = Data.NextTokenTargets.Of(sequences);
        var device = studentLog.device;
        var picked = -studentLog.index_select(0, tensor(rows, device: device)).gather(1, tensor(targets, device: device).unsqueeze(1)).squeeze(1);
        var ce = zeros(studentLog.shape[0], device: device).index_copy(0, tensor(rows, device: device), picked);
        return (kl, ce);
    }

    /// <summary>KL(teacher ‖ student) over the whole vocabulary, per position [T].</summary>
    private static Tensor FullDivergence(Tensor teacherLogits, Tensor studentLog)
    {
        var teacherLog = nn.functional.log_softmax(teacherLogits.to_type(ScalarType.Float32), 1);
        return (teacherLog.exp() * (teacherLog - studentLog)).sum(1);
    }

    /// <summary>
    /// KL between the teacher's and the student's distributions over k + 1 buckets: the teacher's top-k tokens, and
    /// the rest of the vocabulary as one; per position [T].
    /// </summary>
    private Tensor TopKDivergence(TeacherLogitCache cache, IReadOnlyList<long[]> sequences, IReadOnlyList<long>? streamIndices, Tensor studentLog)
    {
        var (teacherTop, ids) = TeacherTopK(cache, sequences, streamIndices);
        teacherTop = teacherTop.to(studentLog.device);
        var studentTop = studentLog.gather(1, ids.to(studentLog.device));
        var teacherTopProbabilities = teacherTop.exp();
        var teacherRest = (1 - teacherTopProbabilities.sum(1)).clamp_min(1e-8);
        var studentRest = (1 - studentTop.exp().sum(1)).clamp_min(1e-8);
        return (teacherTopProbabilities * (teacherTop - studentTop)).sum(1) + teacherRest * (teacherRest.log() - studentRest.log());
    }

    /// <summary>The teacher's top-k log-probabilities and token ids [T, k] of the packed sequences: cached, or computed and cached.</summary>
    private (Tensor LogProbs, Tensor Ids) TeacherTopK(TeacherLogitCache cache, IReadOnlyList<long[]> sequences, IReadOnlyList<long>? streamIndices)
    {
        // The cache's key: checked here, the one place both loss paths read it.
        if (streamIndices is null)
        {
            throw new ArgumentException("the teacher cache needs the sequences' stream indices");
        }
        var logProbs = new Tensor[sequences.Count];
        var ids = new Tensor[sequences.Count];
        var missing = new List<int>();
        for (var s = 0; s < sequences.Count; s++)
        {
            if (!cache.TryGet(streamIndices[s], out logProbs[s], out ids[s]))
            {
                missing.Add(s);
            }
        }
        if (missing.Count > 0)
        {
            var teacherLog = nn.functional.log_softmax(Logits(_teacher, missing.Select(s => sequences[s]).ToArray(), training: false), 1);
            var (top, topIds) = teacherLog.topk(cache.K, dim: 1);
            long offset = 0;
            foreach (var s in missing)
            {
                var length = sequences[s].Length;
                logProbs[s] = top.narrow(0, offset, length).cpu();
                ids[s] = topIds.narrow(0, offset, length).cpu();
                cache.Put(streamIndices[s], logProbs[s], ids[s]);
                offset += length;
            }
        }
        return (cat(logProbs, 0), cat(ids, 0));
    }

    private Tensor Logits(ICausalLM model, IReadOnlyList<long[]> sequences, bool training, bool asComputed = false,
        ResidualHandoff? leave = null, ResidualHandoff? startFrom = null)
    {
        using var caches = model.CreateCache(sequences.Max(s => s.Length), sequences.Count);
        return model.Forward(new ForwardBatch(sequences, caches.Sequences)
        {
            AllLogits = true, Training = training, Threads = Threads, LogitsAsComputed = asComputed, LeaveResidual = leave, StartFrom = startFrom,
        });
    }

    public void Dispose()
    {
        foreach (var layer in _layers)
        {
            layer.Weight.Dispose();
        }
    }
}
