using System.Text.Json.Nodes;

namespace RecurFormer.Toolkit.Distillation;

/// <summary>
/// One logged step. Stage 1: <see cref="Loss"/> is the layer-local loss (squared error of the replaced heads'
/// contribution after o_proj, relative to the teacher's: 1.0 = the heads silenced), <see cref="Layers"/> per layer.
/// Stage 2: Loss = weighted KL + CE, with both parts.
/// </summary>
public sealed record LossRecord(int Stage, int Step, double Loss, double? Kl, double? Ce, IReadOnlyDictionary<int, double>? Layers, double LearningRate, double Seconds)
{
    public JsonObject ToJson() => new()
    {
        ["stage"] = Stage,
        ["step"] = Step,
        ["loss"] = Loss,
        ["kl"] = Kl,
        ["ce"] = Ce,
        ["layers"] = Layers is null ? null : new JsonObject(Layers.Select(l => KeyValuePair.Create(l.Key.ToString(), (JsonNode?)l.Value))),
        ["lr"] = LearningRate,
        ["seconds"] = Math.Round(Seconds, 2),
    };

    public static LossRecord FromJson(JsonNode node) => new(
        node["stage"]!.GetValue<int>(),
        node["step"]!.GetValue<int>(),
        node["loss"]!.GetValue<double>(),
        node["kl"]?.GetValue<double>(),
        node["ce"]?.GetValue<double>(),
        node["layers"] is JsonObject layers ? layers.ToDictionary(l => int.Parse(l.Key), l => l.Value!.GetValue<double>()) : null,
        node["lr"]?.GetValue<double>() ?? 0,
        node["seconds"]?.GetValue<double>() ?? 0);
}
