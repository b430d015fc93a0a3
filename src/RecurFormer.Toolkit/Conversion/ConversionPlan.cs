using System.Text.Json.Nodes;
using RecurFormer.Model.Configuration;

namespace RecurFormer.Toolkit.Conversion;

/// <summary>Everything a conversion needs besides the source model: what to replace, by what, and the random seed.</summary>
public sealed record ConversionPlan(
    ReplacementKind Kind,
    IReadOnlyList<GroupChoice> Selected,
    WindowSpec Window,
    MambaSpec Mamba,
    long Seed = 0,
    JsonObject? AnalysisSummary = null)
{
    public HybridLayout Layout(int layers, string sourceModel) => new()
    {
        Layers = GroupSelection.ToLayers(Selected, layers, Kind),
        Window = Window,
        Mamba = Mamba,
        SourceModel = sourceModel,
        Analysis = AnalysisSummary?.DeepClone(),
    };
}
