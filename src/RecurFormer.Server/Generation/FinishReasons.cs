using RecurFormer.Engine.Requests;

namespace RecurFormer.Server.Generation;

/// <summary>
/// The finish reasons as the API, the request log and the <c>finished_reason</c> metric label write them, in one
/// place: OpenAI's <c>stop</c>, <c>length</c> and <c>tool_calls</c>, plus <c>abort</c> (client gone, timeout,
/// drained) and <c>error</c>.
/// </summary>
public static class FinishReasons
{
    public const string Stop = "stop";
    public const string Length = "length";
    public const string ToolCalls = "tool_calls";
    public const string Abort = "abort";
    public const string Error = "error";

    public static string Name(FinishReason? reason) => reason switch
    {
        FinishReason.Length => Length,
        FinishReason.Abort => Abort,
        _ => Stop,
    };

    /// <summary>One reason for a whole request of several choices: an error or abort wins, then length, then stop.</summary>
    public static string Summarize(bool failed, IReadOnlyCollection<FinishReason?> reasons) =>
        failed ? Error
        : reasons.Count == 0 || reasons.Any(r => r is null or FinishReason.Abort) ? Abort
        : reasons.Any(r => r is FinishReason.Length) ? Length
        : Stop;
}
