namespace RecurFormer.Model.Configuration;

/// <summary>
/// The KV groups of one layer split by how they are computed. Groups keep their original order within each kind;
/// query head h belongs to group h / groupSize.
/// </summary>
public sealed class LayerHeads
{
    public LayerHeads(TransformerConfig config, LayerReplacement replacement)
    {
        GroupSize = config.GroupSize;
        HeadDim = config.HeadDim;
        var all = Enumerable.Range(0, config.NumKeyValueHeads).ToArray();
        MambaGroups = replacement.MambaGroups.ToArray();
        WindowGroups = replacement.WindowGroups.ToArray();
        AttendingGroups = all.Except(MambaGroups).ToArray();
        FullGroups = AttendingGroups.Except(WindowGroups).ToArray();
    }

    public int GroupSize { get; }
    public int HeadDim { get; }

    /// <summary>Groups with q/k/v projections: full and windowed, in original order. q_proj/k_proj/v_proj cover exactly these.</summary>
    public int[] AttendingGroups { get; }
    public int[] FullGroups { get; }
    public int[] WindowGroups { get; }
    public int[] MambaGroups { get; }

    public bool IsPlain => MambaGroups.Length == 0 && WindowGroups.Length == 0;

    /// <summary>Query heads of the given groups, in order.</summary>
    public int[] HeadsOf(IEnumerable<int> groups) => groups.SelectMany(g => Enumerable.Range(g * GroupSize, GroupSize)).ToArray();

    /// <summary>Positions of <paramref name="groups"/> within <see cref="AttendingGroups"/> (for selecting from the projections).</summary>
    public int[] IndexInAttending(IEnumerable<int> groups) => groups.Select(g => Array.IndexOf(AttendingGroups, g)).ToArray();

    /// <summary>Width of the Mamba mixer's output: the replaced heads' share of the o_proj input.</summary>
    public int MambaOutputSize => MambaGroups.Length * GroupSize * HeadDim;
}
