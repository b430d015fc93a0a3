namespace RecurFormer.Model.Configuration;

/// <summary>
/// The KV groups of one layer split by how they are computed. Groups keep their original order within each kind;
/// query head h belongs to group h / groupSize. A window-Mamba group is counted among the windowed groups (it
/// attends through a ring) and among the mixer's groups (the mixer's output for its heads is added).
/// </summary>
public sealed class LayerHeads
{
    public LayerHeads(TransformerConfig config, LayerReplacement replacement)
    {
        GroupSize = config.GroupSize;
        HeadDim = config.HeadDim;
        var all = Enumerable.Range(0, config.NumKeyValueHeads).ToArray();
        MambaGroups = replacement.MambaGroups.ToArray();
        WindowMambaGroups = replacement.WindowMambaGroups.ToArray();
        // Window-Mamba groups last among the windowed ones: their heads are then one contiguous block of the window
        // attention's output, the block the mixer's output is added to.
        WindowGroups = [.. replacement.WindowGroups, .. WindowMambaGroups];
        MixerGroups = [.. MambaGroups, .. WindowMambaGroups];
        AttendingGroups = all.Except(MambaGroups).ToArray();
        FullGroups = AttendingGroups.Except(WindowGroups).ToArray();
    }

    public int GroupSize { get; }
    public int HeadDim { get; }

    /// <summary>Groups with q/k/v projections: full and windowed, in original order. q_proj/k_proj/v_proj cover exactly these.</summary>
    public int[] AttendingGroups { get; }
    public int[] FullGroups { get; }

    /// <summary>Groups that attend through sinks + a recent window: plain windowed ones, then window-Mamba ones.</summary>
    public int[] WindowGroups { get; }

    /// <summary>Groups the mixer alone computes (no attention).</summary>
    public int[] MambaGroups { get; }

    /// <summary>Groups whose window attention gets the mixer's output added.</summary>
    public int[] WindowMambaGroups { get; }

    /// <summary>The mixer's output, in order: the Mamba groups' heads (placed), then the window-Mamba groups' (added).</summary>
    public int[] MixerGroups { get; }

    public bool IsPlain => MambaGroups.Length == 0 && WindowGroups.Length == 0;

    /// <summary>Query heads of the given groups, in order.</summary>
    public int[] HeadsOf(IEnumerable<int> groups) => groups.SelectMany(g => Enumerable.Range(g * GroupSize, GroupSize)).ToArray();

    /// <summary>Positions of <paramref name="groups"/> within <see cref="AttendingGroups"/> (for selecting from the projections).</summary>
    public int[] IndexInAttending(IEnumerable<int> groups) => groups.Select(g => Array.IndexOf(AttendingGroups, g)).ToArray();

    /// <summary>Width of the Mamba mixer's output: its groups' share of the o_proj input.</summary>
    public int MixerOutputSize => MixerGroups.Length * GroupSize * HeadDim;
}
