using RecurFormer.Toolkit.Analysis;
using static TorchSharp.torch;

namespace RecurFormer.Toolkit.Tests;

public sealed class RecencyAnalysisTests
{
    public RecencyAnalysisTests() => TestData.EnsureTorch();

    [Fact]
    public void Analysis_of_qwen2_tiny_equals_a_direct_computation_from_its_attention_probabilities()
    {
        int[] windows = [1, 4, 16];
        const int warmup = 8;
        var ids = TestData.ReferenceIds(TestData.QwenTiny, "prompt_1");
        using var model = TestData.Load(TestData.QwenTiny);
        var report = new RecencyAnalyzer(model, new RecencyOptions(windows, warmup)).Analyze([ids], "qwen2-tiny");

        using var probabilities = TestData.Reference(TestData.QwenTiny, "attn_probs_1"); // [layers, heads, 33, 33], HuggingFace eager
        var p = probabilities.data<float>().ToArray();
        var (layers, heads, n) = ((int)probabilities.shape[0], (int)probabilities.shape[1], (int)probabilities.shape[2]);
        for (var l = 0; l < layers; l++)
        {
            for (var h = 0; h < heads; h++)
            {
                for (var w = 0; w < windows.Length; w++)
                {
                    double sum = 0;
                    for (var q = warmup; q < n; q++)
                    {
                        for (var k = Math.Max(0, q - windows[w] + 1); k <= q; k++)
                        {
                            sum += p[((l * heads + h) * n + q) * n + k];
                        }
                    }
                    var expected = sum / (n - warmup);
                    Assert.Equal(expected, report.ByLayerHeadWindow[l][h][w], 4);
                }
            }
            for (var g = 0; g < report.KvGroups; g++)
            {
                var mean = Enumerable.Range(g * report.GroupSize, report.GroupSize).Average(h => report.ByLayerHeadWindow[l][h][2]);
                Assert.Equal(mean, report.ByLayerGroupWindow[l][g][2], 12);
            }
        }
    }

    [Fact]
    public void A_report_survives_saving_and_loading()
    {
        using var temp = new TemporaryFolder();
        var report = TestData.TinyReport();
        var path = temp.Sub("recency.json");
        report.Save(path);
        var loaded = RecencyReport.Load(path);
        Assert.Equal(report.ByLayerGroupWindow[2][1][0], loaded.ByLayerGroupWindow[2][1][0], 6);
        Assert.Equal(report.Windows, loaded.Windows);
    }

    [Fact]
    public void An_analysis_file_of_another_shape_is_rejected_with_its_name()
    {
        using var temp = new TemporaryFolder();
        var path = temp.Sub("broken.json");
        File.WriteAllText(path, """{"layers": 2, "heads": 8, "kv_groups": 2, "windows": [4], "ratio_by_layer_head_window": [], "ratio_by_layer_group_window": []}""");
        var error = Assert.Throws<AnalysisFileException>(() => RecencyReport.Load(path));
        Assert.Contains("broken.json", error.Message);
    }
}
