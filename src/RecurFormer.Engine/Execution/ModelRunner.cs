using RecurFormer.Engine.Requests;
using RecurFormer.Engine.Sampling;
using RecurFormer.Engine.Scheduling;
using RecurFormer.Model.Caching;
using RecurFormer.Model.CausalLM;
using RecurFormer.Model.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Engine.Execution;

/// <summary>
/// Runs one step's work through the model: one batch of every scheduled sequence (decoding ones bring one token,
/// prefill chunks several), one forward, then what sampling needs read back in one transfer (the argmax of each row
/// when every sequence that samples is plain greedy, else the logits rows), and the sampler over the batch. It owns
/// the threads of the CPU kernels, the engine's one pool.
/// </summary>
internal sealed class ModelRunner : IDisposable
{
    private readonly ICausalLM _model;
    private readonly Sampler _sampler;

    public ModelRunner(ICausalLM model, int threads)
    {
        _model = model;
        _sampler = new Sampler(model.Config.VocabSize);
        Threads = new KernelThreads(threads);
    }

    public KernelThreads Threads { get; }

    /// <summary>Runs the forward (its exception propagates: the batch's caches may be half-written) and reads back what sampling needs.</summary>
    public StepResult Run(IReadOnlyList<(Sequence Sequence, int Tokens)> work)
    {
        var prompt = work.Select(w => w.Sequence.PromptLogprobs is not null).ToArray();
        var batch = new ForwardBatch(
            work.Select(w => w.Sequence.NextTokens(w.Tokens)).ToArray(),
            work.Select(w => w.Sequence.Cache!).ToArray())
        {
            AllLogitsOf = prompt.Any(p => p) ? prompt : null,
            Threads = Threads,
        };
        var starts = work.Select(w => w.Sequence.Computed).ToArray();
        var logits = _model.Forward(batch);
        return new StepResult(logits, batch, work, starts, _sampler);
    }

    public void Dispose() => Threads.Dispose();
}

/// <summary>
/// The outcome of one forward: each sequence's logits row, read back once, and the sampler to choose from it. A
/// sequence that has fed all its tokens samples its next one (and, n > 1, its sibling choices sample from the same
/// row); a sequence that wants prompt log-probabilities gets them for the prompt tokens this chunk covered.
/// </summary>
internal sealed class StepResult : IDisposable
{
    private readonly Tensor _logits;                 // [rows, vocab] float32 on the device
    private readonly IReadOnlyList<(Sequence Sequence, int Tokens)> _work;
    private readonly int[] _firstRow;
    private readonly int[] _lastRow;
    private readonly int[] _starts;
    private readonly Sampler _sampler;
    private readonly long[]? _argmax;                // per work item, when every sampling sequence is plain greedy
    private readonly Tensor? _host;                  // the logits on the host otherwise

    public StepResult(Tensor logits, ForwardBatch batch, IReadOnlyList<(Sequence Sequence, int Tokens)> work, int[] starts, Sampler sampler)
    {
        _logits = logits;
        _work = work;
        _starts = starts;
        _sampler = sampler;
        _firstRow = new int[work.Count];
        _lastRow = new int[work.Count];
        for (int i = 0, row = 0; i < work.Count; i++)
        {
            _firstRow[i] = row;
            row += batch.WantsAllLogits(i) ? work[i].Tokens : 1;
            _lastRow[i] = row - 1;
        }
        Ready = Enumerable.Range(0, work.Count).Where(i => work[i].Sequence.Remaining == 0).ToArray();
        if (Ready.Length == 0)
        {
            return; // prefill chunks only: nothing to sample this step
        }
        if (logits.device_type == DeviceType.CPU)
        {
            _host = logits; // already in host memory: nothing to transfer
        }
        else if (Ready.All(i => Sampler.IsPlainGreedy(work[i].Sequence)))
        {
            using var scope = NewDisposeScope();
            var rows = tensor(_lastRow.Select(r => (long)r).ToArray(), device: logits.device);
            _argmax = logits.index_select(0, rows).argmax(1).cpu().data<long>().ToArray();
        }
        else
        {
            _host = logits.cpu();
        }
    }

    /// <summary>Work items whose sequence has fed every token it had: they sample now.</summary>
    public int[] Ready { get; }

    /// <summary>Chooses the next token of <paramref name="sequence"/> (the item's own, or a sibling choice) from item <paramref name="item"/>'s row.</summary>
    public (int Token, TokenLogprob? Logprob) Sample(int item, ISamplingState sequence)
    {
        if (_argmax is not null && Sampler.IsPlainGreedy(sequence))
        {
            return ((int)_argmax[item], null);
        }
        var vocab = (int)_logits.shape[1];
        var row = TensorMemory.Span<float>(_host!).Slice(_lastRow[item] * vocab, vocab);
        return _sampler.Sample(row, sequence);
    }

    /// <summary>
    /// Log-probabilities of the prompt tokens that item <paramref name="item"/>'s chunk predicts (row j predicts the
    /// token after position start + j), with <paramref name="top"/> alternatives each.
    /// </summary>
    public (int Start, IReadOnlyList<TokenLogprob> Logprobs) PromptLogprobs(int item, int top)
    {
        var sequence = _work[item].Sequence;
        var start = _starts[item];
        var count = Math.Min(_work[item].Tokens, sequence.PromptLength - start - 1);
        if (count <= 0)
        {
            return (start, []);
        }
        using var scope = NewDisposeScope();
        var device = _logits.device;
        var targets = sequence.PromptTokenIds.Skip(start + 1).Take(count).Select(t => (long)t).ToArray();
        var logprobs = nn.functional.log_softmax(_logits.narrow(0, _firstRow[item], count), 1);
        var chosen = logprobs.gather(1, tensor(targets, device: device).unsqueeze(1)).squeeze(1).cpu().data<float>().ToArray();
        float[] topValues = [];
        long[] topIds = [];
        if (top > 0)
        {
            var (values, ids) = logprobs.topk(top, 1);
            topValues = values.cpu().data<float>().ToArray();
            topIds = ids.cpu().data<long>().ToArray();
        }
        return (start, Enumerable.Range(0, count).Select(j => new TokenLogprob((int)targets[j], chosen[j],
            Enumerable.Range(0, top).Select(k => ((int)topIds[j * top + k], (double)topValues[j * top + k])).ToArray())).ToArray());
    }

    public void Dispose()
    {
        if (_host is not null && !ReferenceEquals(_host, _logits))
        {
            _host.Dispose();
        }
        _logits.Dispose();
    }
}
