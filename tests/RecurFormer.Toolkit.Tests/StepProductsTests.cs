using System.Text.Json.Nodes;
using RecurFormer.Model.Configuration;
using RecurFormer.Toolkit.Distillation;
using static TorchSharp.torch;

namespace RecurFormer.Toolkit.Tests;

/// <summary>
/// The product list of a distillation step, against a count made by hand for a three-layer student whose layer 1
/// replaces one of its two KV groups by a Mamba mixer (hidden 16, 4 heads of 4, intermediate 32, vocabulary 50; the
/// mixer: output 8, d_inner 16, rank 2, d_state 4). Per token, in FLOP (2 × in × out per product):
/// teacher layer: qkv 16→32 (4 query heads, k and v of 2 groups) 1024, o 16→16 512, MLP 16→64 2048 and 32→16 1024.
/// </summary>
public sealed class StepProductsTests
{
    private static readonly TransformerConfig Student = (TransformerConfig)ModelConfig.Parse(JsonNode.Parse("""
        {
          "model_type": "qwen2", "vocab_size": 50, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 3,
          "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64, "rms_norm_eps": 1e-6,
          "tie_word_embeddings": true,
          "recurformer": {
            "format_version": 1,
            "mamba": { "expand": 2, "d_state": 4, "d_conv": 4, "dt_rank": 2 },
            "layers": [
              { "mamba_groups": [], "window_groups": [] },
              { "mamba_groups": [1], "window_groups": [] },
              { "mamba_groups": [], "window_groups": [] }
            ]
          }
        }
        """)!.AsObject(), "test");

    private const int Tokens = 10;

    [Fact]
    public void Stage_1_is_the_teacher_up_to_the_last_replaced_attention_and_each_mixer_forward_and_backward()
    {
        var products = StepProducts.Stage1(Student, Tokens, ScalarType.BFloat16, ScalarType.BFloat16);

        // Teacher: layer 0 whole (qkv 1024, o_proj 512, MLP 2048 + 1024), layer 1 to its heads (qkv 1024).
        Assert.Equal(5632.0 * Tokens, Flops(products, "teacher"));
        // in_proj 16→32 forward and weight gradient only (its input is the teacher's): 2 × 1024.
        Assert.Equal(2048.0 * Tokens, Flops(products, "mixer in_proj"));
        Assert.DoesNotContain(products, p => p.Part == "mixer in_proj" && p.Pass == ProductPass.InputGradient);
        // x_proj 16→10 and dt_proj 2→16, in the products' dtype as Mamba trains under autocast, all three passes: 3 × (320 + 64).
        Assert.Equal(1152.0 * Tokens, Flops(products, "mixer x_proj, dt_proj"));
        Assert.All(products.Where(p => p.Part == "mixer x_proj, dt_proj"), p => Assert.Equal(ScalarType.BFloat16, p.DType));
        // out_proj 16→8: 3 × 256; the targets and the error each one forward product by the 8 × 8 Gram matrix: 128.
        Assert.Equal(768.0 * Tokens, Flops(products, "mixer out_proj"));
        Assert.Equal(128.0 * Tokens, Flops(products, "stage-1 targets through o_proj"));
        Assert.Equal(128.0 * Tokens, Flops(products, "stage-1 error through o_proj"));
        Assert.Equal(9856.0 * Tokens, products.Sum(p => p.Flops));
    }

    [Fact]
    public void Stage_2_takes_gradients_only_above_what_trains_and_the_teacher_only_without_its_cache()
    {
        var cached = StepProducts.Stage2(Student, Tokens, ScalarType.BFloat16, ScalarType.BFloat16, TrainedParts.Mamba, teacherCached: true);

        // Layer 0 (below the mixer) and layer 1's qkv (kept group: 2 heads + k + v = 16 rows) run forward only:
        // 1024 + 512 + 3072 and 512. Layer 1: in_proj forward + weight gradient 2048, x_proj/dt_proj 1152, out_proj 768,
        // o_proj forward + input gradient 1024, MLP 2 × 3072. Layer 2: everything forward + input gradient:
        // 2 × (1024 + 512 + 3072). lm_head 16→50 forward + input gradient: 2 × 1600.
        Assert.Equal(28672.0 * Tokens, cached.Sum(p => p.Flops));
        Assert.DoesNotContain(cached, p => p.Part == "teacher");
        Assert.Equal(["mixer in_proj", "mixer out_proj", "mixer x_proj, dt_proj", "mixer x_proj, dt_proj"],
            cached.Where(p => p.Pass == ProductPass.WeightGradient).Select(p => p.Part).Order());
        Assert.Equal(3, cached.Count(p => p.Part == "student qkv_proj" && p.Pass == ProductPass.Forward));
        Assert.Single(cached, p => p.Part == "student qkv_proj" && p.Pass == ProductPass.InputGradient);   // layer 2 only

        var uncached = StepProducts.Stage2(Student, Tokens, ScalarType.Float16, ScalarType.BFloat16, TrainedParts.Mamba, teacherCached: false);
        // + the whole teacher forward: 3 × (1024 + 512 + 3072) + lm_head 1600, in the teacher's dtype; every product of
        // the student in the matmul dtype (x_proj and dt_proj too: its low-precision copy runs them so).
        Assert.Equal(15424.0 * Tokens, Flops(uncached, "teacher"));
        Assert.All(uncached, p => Assert.Equal(p.Part == "teacher" ? ScalarType.Float16 : ScalarType.BFloat16, p.DType));

        // o_proj training too: every layer's o_proj gets its weight gradient, layer 0's no input gradient (what feeds
        // it does not train), and from there on the stream needs gradients (layer 1's qkv input too).
        var output = StepProducts.Stage2(Student, Tokens, ScalarType.BFloat16, ScalarType.BFloat16, TrainedParts.Mamba | TrainedParts.OutputProjection, teacherCached: true);
        Assert.Equal(3, output.Count(p => p.Part == "student o_proj" && p.Pass == ProductPass.WeightGradient));
        Assert.Equal(2, output.Count(p => p.Part == "student o_proj" && p.Pass == ProductPass.InputGradient));
        Assert.Equal(2, output.Count(p => p.Part == "student qkv_proj" && p.Pass == ProductPass.InputGradient));

        // Everything training: every product has its weight gradient, and layer 0's inputs need gradients (the embedding trains).
        var all = StepProducts.Stage2(Student, Tokens, ScalarType.BFloat16, ScalarType.BFloat16, TrainedParts.All, teacherCached: true);
        Assert.Equal(all.Count(p => p.Pass == ProductPass.Forward), all.Count(p => p.Pass == ProductPass.WeightGradient));
        Assert.Equal(all.Count(p => p.Pass == ProductPass.Forward), all.Count(p => p.Pass == ProductPass.InputGradient));
    }

    private static double Flops(IEnumerable<StepProduct> products, string part) => products.Where(p => p.Part == part).Sum(p => p.Flops);
}
