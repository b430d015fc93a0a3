using RecurFormer.Model.CausalLM;
using RecurFormer.Toolkit.Conversion;
using RecurFormer.Toolkit.Distillation;
using TorchSharp;
using static TorchSharp.torch;

namespace RecurFormer.Toolkit.Tests;

public sealed class DistillationTests : IDisposable
{
    private readonly TemporaryFolder _temp = new();

    public DistillationTests() => TestData.EnsureTorch();

    public void Dispose() => _temp.Dispose();

    /// <summary>Five stage-1 steps on qwen2-tiny's reference prompts; returns the losses.</summary>
    private double[] Stage1Losses(string student)
    {
        manual_seed(3);
        var options = new DistillOptions { Stage1LearningRate = 1e-2 };
        using var teacher = TestData.Load(TestData.QwenTiny);
        using var model = TestData.Load(student);
        using var distiller = new Distiller(teacher, model, options);
        var parameters = distiller.Stage1Parameters();
        foreach (var parameter in parameters)
        {
            parameter.requires_grad = true;
        }
        using var optimizer = optim.AdamW(parameters, options.Stage1LearningRate);
        long[][] batch = [TestData.ReferenceIds(TestData.QwenTiny, "prompt_1"), TestData.ReferenceIds(TestData.QwenTiny, "prompt_2")[..33]];
        var losses = new List<double>();
        for (var step = 0; step < 5; step++)
        {
            optimizer.zero_grad();
            losses.Add(distiller.Stage1Backward(batch).Loss);
            optimizer.step();
        }
        using var final = NewDisposeScope();
        optimizer.zero_grad();
        losses.Add(distiller.Stage1Backward(batch).Loss);
        return losses.ToArray();
    }

    [Fact]
    public void A_few_stage1_steps_lower_the_layer_local_loss_deterministically()
    {
        var student = TestData.Convert(_temp, ReplacementKind.Mamba, [(0, 1), (1, 0), (2, 1)]);
        var first = Stage1Losses(student);
        var second = Stage1Losses(student);

        Assert.Equal(1.0, first[0], 6); // out_proj starts at zero: the replaced heads are silent, relative loss 1
        Assert.True(first[^1] < 0.9 * first[0], $"stage-1 loss went from {first[0]} to {first[^1]}");
        Assert.Equal(first, second);
    }

    [Fact]
    public void A_window_mamba_student_refuses_stage1_and_its_mixer_learns_in_stage2()
    {
        var student = TestData.Convert(_temp, ReplacementKind.WindowMamba, [(0, 1), (1, 0), (2, 1)], new RecurFormer.Model.Configuration.WindowSpec(6, 2));
        using var teacher = TestData.Load(TestData.QwenTiny);
        using var model = TestData.Load(student);
        var error = Assert.Throws<ArgumentException>(() => new Distiller(teacher, model, new DistillOptions { Stage1Steps = 1 }));
        Assert.Contains("--stage1-steps 0", error.Message);

        manual_seed(3);
        var options = new DistillOptions { Stage1Steps = 0, Stage2LearningRate = 1e-2 };
        using var distiller = new Distiller(teacher, model, options);
        var parameters = distiller.Stage2Parameters(TrainedParts.Mamba);
        foreach (var parameter in parameters)
        {
            parameter.requires_grad = true;
        }
        using var optimizer = optim.AdamW(parameters, options.Stage2LearningRate);
        long[][] batch = [TestData.ReferenceIds(TestData.QwenTiny, "prompt_2")[..64]];
        var losses = new List<double>();
        for (var step = 0; step < 8; step++)
        {
            optimizer.zero_grad();
            losses.Add(distiller.Stage2Backward(batch).Loss);
            optimizer.step();
        }
        // It starts as the window model (a silent mixer) and the mixer closes part of the window's gap to the teacher.
        Assert.True(losses[^1] < 0.9 * losses[0], $"stage-2 loss went from {losses[0]} to {losses[^1]}");
    }

    /// <summary>
    /// Stage 2's losses through the loss kernels and through the libtorch form: the same loss, KL and CE, and the same
    /// gradients of the trained parameters, over two sequences of different lengths.
    /// </summary>
    [Fact]
    public void Stage2_losses_through_the_kernels_equal_the_libtorch_form()
    {
        var student = TestData.Convert(_temp, ReplacementKind.Mamba, [(0, 1), (2, 0)]);
        using var teacher = TestData.Load(TestData.QwenTiny);
        using var model = TestData.Load(student);
        long[][] batch = [TestData.ReferenceIds(TestData.QwenTiny, "prompt_2")[..48], TestData.ReferenceIds(TestData.QwenTiny, "prompt_1")[..31]];
        var options = new DistillOptions { Stage1Steps = 0 };
        (double Loss, double Kl, double Ce, float[][] Gradients) Step(bool kernels)
        {
            using var distiller = new Distiller(teacher, model, options) { LossKernels = kernels };
            var parameters = distiller.Stage2Parameters(TrainedParts.Mamba);
            foreach (var parameter in parameters)
            {
                parameter.requires_grad = true;
                parameter.grad = null;
            }
            var (loss, kl, ce) = distiller.Stage2Backward(batch);
            return (loss, kl, ce, [.. parameters.Select(p => p.grad!.data<float>().ToArray())]);
        }
        var libtorch = Step(kernels: false);
        var kernels = Step(kernels: true);

        Assert.Equal(libtorch.Loss, kernels.Loss, 5);
        Assert.Equal(libtorch.Kl, kernels.Kl, 5);
        Assert.Equal(libtorch.Ce, kernels.Ce, 5);
        Assert.True(libtorch.Gradients.Sum(g => g.Sum(Math.Abs)) > 0, "no gradient reached the mixers");
        for (var i = 0; i < libtorch.Gradients.Length; i++)
        {
            var scale = libtorch.Gradients[i].Max(Math.Abs);
            var difference = libtorch.Gradients[i].Zip(kernels.Gradients[i], (a, b) => Math.Abs(a - b)).Max();
            Assert.True(difference <= 1e-4 * Math.Max(scale, 1e-6), $"parameter {i}: max |Δ| {difference} against max |∂| {scale}");
        }
    }

    /// <summary>
    /// A student whose layer 0 is the teacher's starts its stage-2 forward from the teacher's stream after layer 0: the
    /// same loss and gradients as its own forward from the embedding. With every o_proj trained, layer 0 is no longer
    /// the teacher's to share: the student runs it, and its o_proj gets its gradient.
    /// </summary>
    [Fact]
    public void Stage2_starts_the_student_from_the_teachers_stream_below_its_first_replaced_layer()
    {
        var student = TestData.Convert(_temp, ReplacementKind.Mamba, [(1, 0), (2, 1)]);
        using var teacher = TestData.Load(TestData.QwenTiny);
        using var model = TestData.Load(student);
        var (studentModel, teacherModel) = ((TransformerCausalLM)model, (TransformerCausalLM)teacher);
        Assert.Equal(1, studentModel.SameLayersAs(teacherModel));
        Assert.Equal(teacherModel.Layers.Count, teacherModel.SameLayersAs(teacherModel));
        long[][] batch = [TestData.ReferenceIds(TestData.QwenTiny, "prompt_2")[..48], TestData.ReferenceIds(TestData.QwenTiny, "prompt_1")[..31]];
        var layer0 = studentModel.Layers[0].SelfAttention.OutputProjection.Weight;
        (double Loss, float[][] Gradients) Step(bool share, TrainedParts parts)
        {
            using var distiller = new Distiller(teacher, model, new DistillOptions { Stage1Steps = 0 }) { ShareTeacherLayers = share };
            foreach (var parameter in studentModel.parameters())
            {
                parameter.requires_grad = false;
                parameter.grad = null;
            }
            var parameters = distiller.Stage2Parameters(parts);
            foreach (var parameter in parameters)
            {
                parameter.requires_grad = true;
            }
            var (loss, _, _) = distiller.Stage2Backward(batch);
            return (loss, [.. parameters.Select(p => p.grad is { } g ? g.data<float>().ToArray() : [])]);
        }

        foreach (var parts in new[] { TrainedParts.Mamba, TrainedParts.Mamba | TrainedParts.OutputProjection })
        {
            var own = Step(share: false, parts);
            var shared = Step(share: true, parts);
            Assert.Equal(own.Loss, shared.Loss, 5);
            Assert.True(own.Gradients.All(g => g.Length > 0) && shared.Gradients.All(g => g.Length > 0), $"{parts}: a trained parameter got no gradient");
            for (var i = 0; i < own.Gradients.Length; i++)
            {
                var scale = own.Gradients[i].Max(Math.Abs);
                var difference = own.Gradients[i].Zip(shared.Gradients[i], (a, b) => Math.Abs(a - b)).Max();
                Assert.True(difference <= 1e-4 * Math.Max(scale, 1e-6), $"{parts}, parameter {i}: max |Δ| {difference} against max |∂| {scale}");
            }
        }
        Assert.True(layer0.grad is { } gradient && gradient.abs().sum().item<float>() > 0, "layer 0's o_proj, trained, got no gradient");
    }

    [Fact]
    public void A_short_run_writes_the_student_losses_and_a_resumable_checkpoint()
    {
        var student = TestData.Convert(_temp, ReplacementKind.Mamba, [(1, 1)]);
        // qwen2-tiny has no tokenizer: RunFolder gives the student a byte-level one that fits its vocabulary.
        var options = new DistillOptions { Stage1Steps = 2, Stage2Steps = 2, BatchSize = 2, SequenceLength = 24, CheckpointEvery = 1, WarmupSteps = 1 };
        var paths = RunFolder("run", student);
        var run = new DistillationRun(TestData.QwenTiny, student, () => WordTexts, options, RecurFormer.Model.Runtime.TorchRuntime.Initialize(new RecurFormer.Model.Runtime.TorchOptions { DType = "float32" }));
        var records = run.Run(paths, resume: false, ScalarType.Float32);

        Assert.Equal([1, 1, 2, 2], records.Select(r => r.Stage));
        Assert.True(File.Exists(paths.Plot) && File.Exists(paths.Losses) && File.Exists(Path.Combine(paths.Out, "model.safetensors")));
        var state = ResumeState.Load(paths.State);
        Assert.Equal(3, state.Stage); // both stages done
        Assert.Equal(8, state.Sequences);
        using var distilled = TestData.Load(paths.Out);
    }

    [Fact]
    public void A_checkpoint_of_an_earlier_version_without_a_recipe_resumes_under_any_options()
    {
        var path = Path.Combine(Directory.CreateDirectory(_temp.Sub("old")).FullName, "state.json");
        File.WriteAllText(path, """{"stage":2,"step":3,"sequences":40,"records":[]}""");
        var state = ResumeState.Load(path);
        Assert.Empty(state.Recipe);
        Assert.Empty(new DistillOptions { Stage2Steps = 9, Seed = 4 }.RecipeDifferences(state.Recipe));

        // A state saved with a recipe (as a resumed run saves its next checkpoint) reads back with it.
        (state with { Recipe = new DistillOptions { Seed = 4 }.Recipe() }).Save(path);
        Assert.Equal([new RecipeDifference("Seed", "4", "0")], new DistillOptions().RecipeDifferences(ResumeState.Load(path).Recipe));
    }

    [Fact]
    public void A_run_out_of_time_leaves_a_checkpoint_that_resumes_to_the_end()
    {
        var student = TestData.Convert(_temp, ReplacementKind.Mamba, [(1, 1)]);
        var options = new DistillOptions { Stage1Steps = 3, Stage2Steps = 1, BatchSize = 2, SequenceLength = 24, CheckpointEvery = 100, WarmupSteps = 1 };
        var paths = RunFolder("timed", student);
        var target = RecurFormer.Model.Runtime.TorchRuntime.Initialize(new RecurFormer.Model.Runtime.TorchOptions { DType = "float32" });
        // No time at all: the first step still runs, then the run stops with a checkpoint (CheckpointEvery is far off).
        var first = new DistillationRun(TestData.QwenTiny, student, () => WordTexts, options, target) { StopAfterTime = TimeSpan.Zero }.Run(paths, false, ScalarType.Float32);
        Assert.Single(first);
        Assert.Equal((1, 1), (ResumeState.Load(paths.State).Stage, ResumeState.Load(paths.State).Step));
        Assert.True(File.Exists(Path.Combine(paths.Checkpoint, "model.safetensors")));
        // Resumed with another schedule (a forgotten flag): refused before it trains or writes anything.
        var other = Assert.Throws<ArgumentException>(() => new DistillationRun(TestData.QwenTiny, student, () => WordTexts, options with { Stage1Steps = 4, Seed = 5 }, target).Run(paths, true, ScalarType.Float32));
        Assert.Contains($"{paths.Out} is a run with other options (Seed: the checkpoint's 0, asked for 5; Stage1Steps: the checkpoint's 3, asked for 4)", other.Message);
        Assert.Equal(options.Recipe(), ResumeState.Load(paths.State).Recipe);
        var rest = new DistillationRun(TestData.QwenTiny, student, () => WordTexts, options with { CheckpointEvery = 7 }, target).Run(paths, true, ScalarType.Float32);
        Assert.Equal([1, 1, 1, 2], rest.Select(r => r.Stage));
        Assert.True(File.Exists(Path.Combine(paths.Out, "model.safetensors")));
    }

    /// <summary>
    /// Also with the bfloat16 teacher and products (stage 2 through low-precision copies of the student), and with two
    /// workers sharing each batch (their gradients summed in worker order: the same result whichever finishes first).
    /// </summary>
    [Theory]
    [InlineData(false, 1)]
    [InlineData(true, 1)]
    [InlineData(true, 2)]
    public void A_resumed_run_continues_exactly_where_the_interrupted_one_stopped(bool bfloat16, int workers)
    {
        var student = TestData.Convert(_temp, ReplacementKind.Mamba, [(0, 0), (2, 1)]);
        CopyTokenizer(student);
        var texts = Enumerable.Range(0, 100).Select(i => $"text {i} about the type T{i % 7}").ToArray();
        var options = new DistillOptions { Stage1Steps = 3, Stage2Steps = 2, BatchSize = 2, SequenceLength = 16, CheckpointEvery = 10, WarmupSteps = 1, Workers = workers };
        if (bfloat16)
        {
            options = options with { TeacherDType = ScalarType.BFloat16, MatmulDType = ScalarType.BFloat16 };
        }
        var target = RecurFormer.Model.Runtime.TorchRuntime.Initialize(new RecurFormer.Model.Runtime.TorchOptions { DType = "float32" });

        var whole = new DistillationRun(TestData.QwenTiny, student, () => texts, options, target).Run(new DistillationPaths(_temp.Sub("whole")), false, ScalarType.Float32);
        var sliced = new DistillationPaths(_temp.Sub("sliced"));
        new DistillationRun(TestData.QwenTiny, student, () => texts, options, target) { StopAfterSteps = 2 }.Run(sliced, false, ScalarType.Float32);
        new DistillationRun(TestData.QwenTiny, student, () => texts, options, target) { StopAfterSteps = 2 }.Run(sliced, true, ScalarType.Float32);
        var resumed = new DistillationRun(TestData.QwenTiny, student, () => texts, options, target).Run(sliced, true, ScalarType.Float32);

        Assert.Equal(whole.Select(r => (r.Stage, r.Step, r.Loss)), resumed.Select(r => (r.Stage, r.Step, r.Loss)));
    }

    /// <summary>
    /// A step whose forward or backward fails inside libtorch is run again from the same batch, once: the replicas'
    /// half-summed gradients of the failed attempt are dropped, so the run ends exactly as one that never failed.
    /// </summary>
    [Fact]
    public void A_step_that_fails_once_is_run_again_and_the_run_ends_as_if_it_had_not()
    {
        var student = TestData.Convert(_temp, ReplacementKind.Mamba, [(0, 0), (2, 1)]);
        CopyTokenizer(student);
        var texts = Enumerable.Range(0, 100).Select(i => $"text {i} about the type T{i % 7}").ToArray();
        var options = new DistillOptions
        {
            Stage1Steps = 3, Stage2Steps = 2, BatchSize = 2, SequenceLength = 16, CheckpointEvery = 10, WarmupSteps = 1, Workers = 2,
            TeacherDType = ScalarType.BFloat16, MatmulDType = ScalarType.BFloat16,
        };
        var target = RecurFormer.Model.Runtime.TorchRuntime.Initialize(new RecurFormer.Model.Runtime.TorchOptions { DType = "float32" });
        var clean = new DistillationRun(TestData.QwenTiny, student, () => texts, options, target);
        var whole = clean.Run(new DistillationPaths(_temp.Sub("clean")), false, ScalarType.Float32);
        // The profile splits each worker's stage-1 time into its teacher forward and its mixers.
        var stage1 = clean.Throughput.Single(t => t.Stage == 1).Phases.ToJson()!;
        foreach (var worker in new[] { 0, 1 })
        {
            var parts = (double)stage1[$"worker {worker} teacher"]! + (double)stage1[$"worker {worker} mixers"]!;
            Assert.InRange((double)stage1[$"worker {worker}"]! - parts, -2e-4, 2e-4);   // each figure rounded to 1e-4
            Assert.True((double)stage1[$"worker {worker} teacher"]! > 0);
        }
        // And each worker's stage-2 time into its replica's pull, the teacher's forward, the student's, the losses and
        // the backward (five figures, each rounded to 1e-4: their sum within 3e-4 of the worker's, also rounded).
        var stage2 = clean.Throughput.Single(t => t.Stage == 2).Phases.ToJson()!;
        foreach (var worker in new[] { 0, 1 })
        {
            string[] names = ["pull", "teacher", "student", "losses", "backward"];
            var parts = names.Sum(name => (double)stage2[$"worker {worker} {name}"]!);
            Assert.InRange((double)stage2[$"worker {worker}"]! - parts, -3.5e-4, 3.5e-4);
            // (the losses of this tiny model may round to 0)
            Assert.All(["teacher", "student", "backward"], name => Assert.True((double)stage2[$"worker {worker} {name}"]! > 0, $"worker {worker} {name}: no time"));
        }

        var failed = new HashSet<(int, int)>();
        var log = new List<string>();
        var retried = new DistillationRun(TestData.QwenTiny, student, () => texts, options, target)
        {
            FailAfterWorkers = (stage, step) => (stage, step) is (1, 2) or (2, 1) && failed.Add((stage, step)),
            Log = log.Add,
        }.Run(new DistillationPaths(_temp.Sub("failing")), false, ScalarType.Float32);

        Assert.Equal(2, failed.Count);
        Assert.Contains(log, line => line.StartsWith("stage 1 step 2 failed (injected failure", StringComparison.Ordinal));
        Assert.Equal(whole.Select(r => (r.Stage, r.Step, r.Loss)), retried.Select(r => (r.Stage, r.Step, r.Loss)));

        // A step that fails again stops the run with its error.
        var error = Assert.Throws<System.Runtime.InteropServices.ExternalException>(() => new DistillationRun(TestData.QwenTiny, student, () => texts, options, target)
        {
            FailAfterWorkers = (stage, step) => (stage, step) == (1, 2),
        }.Run(new DistillationPaths(_temp.Sub("failing-twice")), false, ScalarType.Float32));
        Assert.Contains("stage 1 step 2", error.Message);
    }

    /// <summary>
    /// Two workers, each with its own teacher and student (the second a replica), on a batch of three sequences split
    /// 1 + 2: the same loss and the same gradients in the master's parameters as one worker on the whole batch.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void Two_workers_sharing_a_batch_give_the_loss_and_gradients_of_one(int stage)
    {
        var student = TestData.Convert(_temp, ReplacementKind.Mamba, [(0, 1), (1, 0), (2, 1)]);
        var prompt = TestData.ReferenceIds(TestData.QwenTiny, "prompt_2");
        long[][] batch = [TestData.ReferenceIds(TestData.QwenTiny, "prompt_1")[..20], prompt[..20], prompt[5..25]];
        var options = new DistillOptions();
        using var teacher = TestData.Load(TestData.QwenTiny);
        using var secondTeacher = TestData.Load(TestData.QwenTiny);
        using var model = TestData.Load(student);
        using var single = new Distiller(teacher, model, options);
        var parameters = stage == 1 ? single.Stage1Parameters() : single.Stage2Parameters(TrainedParts.Mamba | TrainedParts.OutputProjection);
        foreach (var parameter in ((nn.Module)model).parameters())
        {
            parameter.requires_grad = false;
        }
        foreach (var parameter in parameters)
        {
            parameter.requires_grad = true;
        }

        var one = stage == 1 ? single.Stage1Backward(batch).Loss : single.Stage2Backward(batch).Loss;
        var expected = parameters.Select(p => p.grad!.clone()).ToArray();
        foreach (var parameter in parameters)
        {
            parameter.grad = null;
        }
        var target = RecurFormer.Model.Runtime.TorchRuntime.Initialize(new RecurFormer.Model.Runtime.TorchOptions { DType = "float32" });
        using var team = new DistillTeam([teacher, secondTeacher], model, student, target, lowPrecision: false, parameters, options, cache: null);
        var two = stage == 1 ? team.Stage1Backward(batch).Loss : team.Stage2Backward(batch, [0, 1, 2]).Loss;

        Assert.Equal(one, two, 5);
        for (var i = 0; i < parameters.Count; i++)
        {
            var scale = Math.Max(1e-6f, expected[i].abs().max().item<float>());
            var difference = (expected[i] - parameters[i].grad!).abs().max().item<float>() / scale;
            Assert.True(difference < 1e-4, $"parameter {i}: max |Δ| / scale = {difference}");
        }
    }

    /// <summary>
    /// A worker whose stage-1 teacher fails releases the other, which runs out of its own mixers and waits for the
    /// failed share's targets to take one of its mixers: the team reports the teacher's own error (not the other
    /// worker's cancelled wait), whichever share failed, and the next step runs.
    /// </summary>
    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    public async Task A_failed_stage1_teacher_ends_the_step_with_its_own_error_and_the_next_step_runs(int failing)
    {
        var student = TestData.Convert(_temp, ReplacementKind.Mamba, [(0, 1), (1, 0)]);
        var prompt = TestData.ReferenceIds(TestData.QwenTiny, "prompt_2");
        using var teacher = TestData.Load(TestData.QwenTiny);
        using var secondTeacher = TestData.Load(TestData.QwenTiny);
        using var model = TestData.Load(student);
        var options = new DistillOptions();
        using var single = new Distiller(teacher, model, options);
        var parameters = single.Stage1Parameters();
        var target = RecurFormer.Model.Runtime.TorchRuntime.Initialize(new RecurFormer.Model.Runtime.TorchOptions { DType = "float32" });
        using var team = new DistillTeam([teacher, secondTeacher], model, student, target, lowPrecision: false, parameters, options, cache: null);

        // Shares [first] and [second, third]: a token past the vocabulary in the first share, or the second share's
        // lengths differing, makes that share's teacher throw.
        var outside = prompt[..20].ToArray();
        outside[3] = 1_000_000;
        long[][] broken = failing == 0 ? [outside, prompt[..20], prompt[2..22]] : [prompt[..20], prompt[..20], prompt[..15]];
        var step = Task.Run(() => team.Stage1Backward(broken));
        var error = await Assert.ThrowsAnyAsync<Exception>(() => step.WaitAsync(TimeSpan.FromMinutes(2)));   // a hang times out instead
        Assert.IsNotType<TimeoutException>(error);
        Assert.IsNotType<OperationCanceledException>(error);
        if (failing == 1)
        {
            Assert.Contains("equal length", Assert.IsType<ArgumentException>(error).Message);
        }

        team.ClearGradients();
        foreach (var parameter in parameters)
        {
            parameter.grad = null;
        }
        var (loss, _) = team.Stage1Backward([prompt[..20], prompt[2..22], prompt[4..24]]);
        Assert.True(double.IsFinite(loss) && loss > 0, $"loss {loss}");
        Assert.All(parameters, p => Assert.NotNull(p.grad));
    }

    /// <summary>
    /// Stage 2 with answer weights: a sequence whose every position weighs 3 next to one whose positions weigh 1 gives
    /// the weighted means of the two sequences' own KL and CE; and two workers sharing the batch give one's loss.
    /// </summary>
    [Fact]
    public void Answer_weighted_stage2_takes_weighted_means_over_the_whole_batch()
    {
        var student = TestData.Convert(_temp, ReplacementKind.Mamba, [(1, 0), (2, 1)]);
        var prompt = TestData.ReferenceIds(TestData.QwenTiny, "prompt_2");
        var answer = TestData.ReferenceIds(TestData.QwenTiny, "prompt_1")[..18];
        var plain = prompt[..20].Where(t => t != answer[0]).ToArray();           // no marker in it
        var other = prompt[4..20].Where(t => t != answer[0]).ToArray();
        // The marker is the answer sequence's first token, and its answer runs to the end: every position weighs 3.
        var weighting = new AnswerWeighting([answer[0]], End: -1, Tokens: 1000, Weight: 3);
        Assert.Equal(Enumerable.Repeat(3f, answer.Length), weighting.Of(answer));
        Assert.Equal(Enumerable.Repeat(1f, plain.Length), weighting.Of(plain));
        using var teacher = TestData.Load(TestData.QwenTiny);
        using var secondTeacher = TestData.Load(TestData.QwenTiny);
        using var model = TestData.Load(student);
        var options = new DistillOptions();
        using var unweighted = new Distiller(teacher, model, options);
        using var weighted = new Distiller(teacher, model, options) { AnswerWeighting = weighting };
        var parameters = unweighted.Stage2Parameters(TrainedParts.Mamba);
        foreach (var parameter in parameters)
        {
            parameter.requires_grad = true;
        }

        var a = unweighted.Stage2Backward([answer]);
        var b = unweighted.Stage2Backward([plain]);
        var both = weighted.Stage2Backward([answer, plain]);
        double Mean(double x, int nx, double y, int ny) => (3 * nx * x + ny * y) / (3 * nx + ny);
        Assert.Equal(Mean(a.Kl, answer.Length, b.Kl, plain.Length), both.Kl, 5);
        Assert.Equal(Mean(a.Ce, answer.Length - 1, b.Ce, plain.Length - 1), both.Ce, 5);
        Assert.NotEqual(unweighted.Stage2Backward([answer, plain]).Kl, both.Kl, 5);

        // A marker in the middle: positions 6..9 weigh 3, and each position's own KL and CE, computed here from the two
        // models' logits, must be weighted where the weights say (a shift by one position would show).
        long[] middle = [.. plain[..6], answer[0], .. other[..10]];
        var marked = new AnswerWeighting([answer[0]], End: -1, Tokens: 4, Weight: 3);
        var weights = marked.Of(middle);
        Assert.Equal([1, 1, 1, 1, 1, 1, 3, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1], weights);
        using var markedDistiller = new Distiller(teacher, model, options) { AnswerWeighting = marked };
        var byHand = markedDistiller.Stage2Backward([middle]);
        using (var scope = NewDisposeScope())
        {
            var teacherLog = nn.functional.log_softmax(TestData.AllLogits(teacher, middle), 1);
            var studentLog = nn.functional.log_softmax(TestData.AllLogits(model, middle), 1);
            var kl = (teacherLog.exp() * (teacherLog - studentLog)).sum(1).data<float>().ToArray();
            var ce = Enumerable.Range(0, middle.Length - 1).Select(t => -studentLog[t, middle[t + 1]].item<float>()).ToArray();
            Assert.Equal(kl.Select((v, t) => v * weights[t]).Sum() / weights.Sum(), byHand.Kl, 4);
            Assert.Equal(ce.Select((v, t) => v * weights[t]).Sum() / weights[..^1].Sum(), byHand.Ce, 4);
        }

        long[][] batch = [plain, answer, other];
        var one = weighted.Stage2Backward(batch).Loss;
        var target = RecurFormer.Model.Runtime.TorchRuntime.Initialize(new RecurFormer.Model.Runtime.TorchOptions { DType = "float32" });
        using var team = new DistillTeam([teacher, secondTeacher], model, student, target, lowPrecision: false, parameters, options, cache: null, weighting);
        Assert.Equal(one, team.Stage2Backward(batch, [0, 1, 2]).Loss, 5);
    }

    [Fact]
    public void Stage2_reads_the_teacher_top_k_it_cached_and_with_k_the_vocabulary_its_KL_is_the_full_KL()
    {
        var student = TestData.Convert(_temp, ReplacementKind.Mamba, [(1, 0)]);
        long[][] batch = [TestData.ReferenceIds(TestData.QwenTiny, "prompt_1")[..20], TestData.ReferenceIds(TestData.QwenTiny, "prompt_2")[..20]];
        long[] indices = [6, 7];
        var folder = _temp.Sub("teacher-cache");
        using var teacher = TestData.Load(TestData.QwenTiny);
        using var model = TestData.Load(student);
        (double Kl, long Hits, long Misses) Step(TeacherLogitCache? cache)
        {
            using var distiller = new Distiller(teacher, model, new DistillOptions()) { TeacherCache = cache };
            foreach (var parameter in distiller.Stage2Parameters(TrainedParts.Mamba))
            {
                parameter.requires_grad = true;
            }
            var (_, kl, _) = distiller.Stage2Backward(batch, streamIndices: indices);
            return (kl, cache?.Hits ?? 0, cache?.Misses ?? 0);
        }

        var computed = Step(new TeacherLogitCache(folder, "key", k: 16, shardSize: 2));
        var read = Step(new TeacherLogitCache(folder, "key", k: 16, shardSize: 2));
        var vocabulary = (int)model.Config.VocabSize;
        var full = Step(null);
        var everyToken = Step(new TeacherLogitCache(folder, "key", k: vocabulary, shardSize: 2));

        Assert.Equal((0L, 2L), (computed.Hits, computed.Misses));
        Assert.Equal((2L, 0L), (read.Hits, read.Misses));   // sequences 6 and 7 fill shard 3, which the first run wrote
        Assert.Equal(computed.Kl, read.Kl);
        Assert.Equal(full.Kl, everyToken.Kl, 4);
    }

    /// <summary>200 short lines of 12 words from a 37-word vocabulary: enough for a few steps of a short run.</summary>
    private static readonly string[] WordTexts = Enumerable.Range(0, 200).Select(i => string.Join(' ', Enumerable.Range(i, 12).Select(j => $"w{j % 37}"))).ToArray();

    /// <summary>A run's output folder, made, with the student given a tokenizer (qwen2-tiny has none).</summary>
    private DistillationPaths RunFolder(string name, string student)
    {
        var paths = new DistillationPaths(_temp.Sub(name));
        Directory.CreateDirectory(paths.Out);
        CopyTokenizer(student);
        return paths;
    }

    /// <summary>A byte-level tokenizer whose ids fit qwen2-tiny's vocabulary of 320: the demo model's first 256 tokens.</summary>
    private static void CopyTokenizer(string student)
    {
        var source = Path.Combine(TestData.RepositoryRoot, "tests", "fixtures", "tiny-tokenizer");
        foreach (var file in Directory.GetFiles(source))
        {
            File.Copy(file, Path.Combine(student, Path.GetFileName(file)), overwrite: true);
        }
    }
}

/// <summary>The teacher cache when a step is run again after a failure: what it wrote is read back, not asked for again.</summary>
public sealed class TeacherLogitCacheTests : IDisposable
{
    private readonly TemporaryFolder _temp = new();

    public TeacherLogitCacheTests() => TestData.EnsureTorch();

    public void Dispose() => _temp.Dispose();

    [Fact]
    public void A_shard_written_after_it_was_read_as_missing_is_served_and_not_collected_again()
    {
        using var scope = NewDisposeScope();
        var cache = new TeacherLogitCache(_temp.Sub("cache"), "key", k: 2, shardSize: 2);
        var logProbs = tensor(new float[] { -0.1f, -2.5f, -0.2f, -1.9f }).view(2, 2);
        var ids = tensor(new long[] { 3, 5, 4, 6 }).view(2, 2);
        Assert.False(cache.TryGet(0, out _, out _)); // the first attempt: not cached yet, so it computes both
        cache.Put(0, logProbs, ids);
        cache.Put(1, logProbs, ids);                 // the shard is complete and written

        // The attempt run again finds both sequences, and putting them again leaves nothing pending.
        Assert.True(cache.TryGet(0, out var read, out var readIds));
        Assert.Equal(logProbs.data<float>().ToArray(), read.data<float>().ToArray());
        Assert.Equal(ids.data<long>().ToArray(), readIds.data<long>().ToArray());
        Assert.True(cache.TryGet(1, out _, out _));
        Assert.Equal(1, cache.Misses);
    }
}

public sealed class MixerFunctionTests : IDisposable
{
    private readonly TemporaryFolder _temp = new();

    public MixerFunctionTests() => TestData.EnsureTorch();

    public void Dispose() => _temp.Dispose();

    /// <summary>A model with one mixer (layer 1, two groups) whose weights are moved off their initialisation at random.</summary>
    private RecurFormer.Model.CausalLM.ICausalLM ModelWithRandomMixer(Generator generator)
    {
        var folder = TestData.Convert(_temp, ReplacementKind.Mamba, [(1, 0), (1, 1)]);
        TestData.Patch(folder, (name, tensor) => name.Contains(".mamba.", StringComparison.Ordinal) && !name.EndsWith("A_log", StringComparison.Ordinal)
            ? tensor + (rand(tensor.shape, generator: generator) - 0.5) * 0.3
            : null);
        return TestData.Load(folder);
    }

    private static RecurFormer.Model.Layers.MambaMixer MixerOf(RecurFormer.Model.CausalLM.ICausalLM model) =>
        ((nn.Module)model).named_modules().Select(m => m.module).OfType<RecurFormer.Model.Layers.MambaMixer>().Single();

    [Fact]
    public void The_training_form_of_the_mixer_computes_what_the_model_mixer_computes()
    {
        using var generator = new Generator(5);
        using var model = ModelWithRandomMixer(generator);
        var mixer = MixerOf(model);
        using var x = randn([2 * 70, 64], generator: generator);
        using var caches = model.CreateCache(70, sequences: 2);
        using var context = new RecurFormer.Model.CausalLM.ForwardContext(new RecurFormer.Model.CausalLM.ForwardBatch([new long[70], new long[70]], caches.Sequences), CPU, ScalarType.Float32);
        using var expected = mixer.Forward(x, context);
        using var actual = new MixerFunction(mixer).Forward(x, 2);
        var difference = (expected - actual).abs().max().item<float>();
        Assert.True(difference < 1e-4, $"max |Δ| = {difference}");
    }

    /// <summary>
    /// Stage 1's loss and gradients, computed by hand (the error weighted by the columns' Gram matrix), against autograd
    /// through the model's own training forward of the mixer (its kernels' autograd nodes and libtorch's products) and
    /// the error through the columns themselves: the same loss, and every parameter's gradient
    /// within 1e-4 of its largest value. Every parameter of a converted model's mixer is checked (in_proj and out_proj
    /// have no bias there; MixerFunction refuses a mixer with them).
    /// </summary>
    /// <remarks>
    /// With <paramref name="autograd"/>, the same through MixerFunction's autograd form (what runs off the CPU); with
    /// <paramref name="factor"/>, the error through the Cholesky factor of the columns' Gram matrix instead of the
    /// matrix itself (ErrorWeight). A second call adds the same gradients again (into existing ones, as the master's are
    /// after ZeroGrad).
    /// </remarks>
    [Theory]
    [InlineData(false, false)]
    [InlineData(false, true)]
    [InlineData(true, false)]
    [InlineData(true, true)]
    public void Stage_one_gradients_by_hand_equal_autograd_through_the_model_mixer(bool autograd, bool factor)
    {
        using var generator = new Generator(7);
        using var model = ModelWithRandomMixer(generator);
        var mixer = MixerOf(model);
        var parameters = mixer.named_parameters().ToArray();
        Assert.Contains(parameters, p => p.name == "conv1d_bias");
        foreach (var (_, parameter) in parameters)
        {
            parameter.requires_grad = true;
        }
        const int sequences = 2, length = 70;
        var output = mixer.Shape.OutputSize;
        using var x = randn([sequences * length, 64], generator: generator);
        using var target = randn([sequences * length, output], generator: generator) * 0.1;
        using var columns = randn([64, output], generator: generator);
        const double norm = 3.7, scale = 0.5;

        using (var caches = model.CreateCache(length, sequences))
        using (var context = new RecurFormer.Model.CausalLM.ForwardContext(
            new RecurFormer.Model.CausalLM.ForwardBatch([new long[length], new long[length]], caches.Sequences) { Training = true }, CPU, ScalarType.Float32))
        {
            using var y = mixer.Forward(x, context);
            using var error = (y - target).mm(columns.t());
            using var loss = error.square().sum() / norm;
            (loss * scale).backward();
            var expectedLoss = loss.item<float>();
            var expected = parameters.Select(p => p.parameter.grad!.clone()).ToArray();
            foreach (var (_, parameter) in parameters)
            {
                parameter.grad = null;
            }

            using var weight = ErrorWeight.For(columns, ScalarType.Float32, factor);
            Assert.Equal(factor, weight.IsFactor);
            var function = new MixerFunction(mixer) { ForceAutograd = autograd };
            Assert.Equal(!autograd, function.UsesKernels(x));
            for (var call = 1; call <= 2; call++)
            {
                var actualLoss = function.Stage1Backward(x, sequences, target, weight, norm, scale);

                Assert.True(Math.Abs(actualLoss / expectedLoss - 1) < 1e-5, $"loss {actualLoss} against {expectedLoss}");
                for (var i = 0; i < parameters.Length; i++)
                {
                    var (name, parameter) = parameters[i];
                    Assert.NotNull(parameter.grad);
                    var largest = Math.Max(1e-6f, expected[i].abs().max().item<float>());
                    var difference = (expected[i] * call - parameter.grad!).abs().max().item<float>() / (largest * call);
                    Assert.True(difference < 1e-4, $"{name}, call {call}: max |Δ| / largest = {difference}");
                }
            }
        }
    }
    /// <summary>
    /// The error goes through the Gram matrix only while rounding it to the products' dtype leaves it positive
    /// semi-definite. Columns R = [[1, c], [0, √1e-5]] with c = 1 + 3·2⁻⁹ have the positive definite Gram matrix
    /// [[1, c], [c, c² + 1e-5]]; bfloat16 rounds c up to 1 + 2⁻⁷ and c² + 1e-5 to 1 + 2⁻⁶, whose determinant is negative,
    /// so the Cholesky factor is used, and Σ‖δ Rᵀ‖² stays the squared error through the columns. Orthogonal columns keep
    /// the Gram matrix.
    /// </summary>
    [Fact]
    public void The_error_weight_uses_the_gram_matrix_only_while_its_rounding_stays_positive_semidefinite()
    {
        const double c = 1 + 3.0 / 512;
        using var columns = tensor(new[] { 1f, (float)c, 0f, (float)Math.Sqrt(1e-5) }).view(2, 2);
        using var gram = columns.t().mm(columns).to_type(ScalarType.Float64);
        Assert.True(linalg.eigvalsh(gram).min().item<double>() > 0);
        Assert.True(linalg.eigvalsh(gram.to_type(ScalarType.BFloat16).to_type(ScalarType.Float64)).min().item<double>() < 0);
        using var weight = ErrorWeight.For(columns, ScalarType.BFloat16);
        Assert.True(weight.IsFactor);
        using var delta = tensor(new[] { 0.5f, -0.25f, 2f, 1f }).view(2, 2);
        var expected = delta.mm(columns.t()).square().sum().item<float>();
        Assert.True(Math.Abs(weight.Apply(delta).Squares / expected - 1) < 0.02, $"{weight.Apply(delta).Squares} against {expected}");

        using var orthogonal = ErrorWeight.For(tensor(new[] { 2f, 0f, 0f, 3f }).view(2, 2), ScalarType.BFloat16);
        Assert.False(orthogonal.IsFactor);
    }
}

public sealed class TrainingSequencesTests
{
    /// <summary>A run longer than the data starts the texts again (another epoch, shuffled anew) instead of stopping.</summary>
    [Fact]
    public void The_sequences_start_again_when_the_texts_run_out()
    {
        var tokenizer = Tokenization.CheckpointTokenizer.FromPretrained(Path.Combine(TestData.RepositoryRoot, "models", "dotnet-docs-qwen2-16m"));
        string[] texts = ["The quick brown fox jumps over the lazy dog.", "Pack my box with five dozen liquor jugs."];
        var perEpoch = texts.Sum(t => tokenizer.Encode(t, addBosToken: false).Length) / 4; // one stream, cut into 4-token pieces
        using var sequences = new TrainingSequences(() => texts, tokenizer, length: 4, seed: 5, blockSize: 2);
        var first = Enumerable.Range(0, perEpoch).Select(_ => string.Join(",", sequences.Next())).Order().ToArray();
        var second = Enumerable.Range(0, perEpoch).Select(_ => string.Join(",", sequences.Next())).Order().ToArray();
        Assert.True(perEpoch >= 4);
        Assert.Equal(first, second);
        Assert.Equal(2 * perEpoch, sequences.Consumed);
    }

    [Fact]
    public void Data_without_one_whole_sequence_is_an_error_not_an_endless_loop()
    {
        var tokenizer = Tokenization.CheckpointTokenizer.FromPretrained(Path.Combine(TestData.RepositoryRoot, "models", "dotnet-docs-qwen2-16m"));
        using var sequences = new TrainingSequences(() => ["short"], tokenizer, length: 256, seed: 5);
        Assert.Throws<InvalidOperationException>(() => sequences.Next());
    }
}
