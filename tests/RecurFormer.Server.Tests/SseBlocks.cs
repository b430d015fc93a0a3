using System.Text;

namespace RecurFormer.Server.Tests;

/// <summary>Reads a server-sent-event stream as its blocks (the lines between blank lines, joined).</summary>
internal static class SseBlocks
{
    /// <summary>Reads blocks until <paramref name="until"/> matches one (or the stream ends); returns what was read.</summary>
    public static async Task<List<string>> Read(StreamReader reader, Func<string, bool>? until = null)
    {
        var blocks = new List<string>();
        var block = new StringBuilder();
        while (await reader.ReadLineAsync() is { } line)
        {
            if (line.Length > 0)
            {
                block.Append(line);
                continue;
            }
            blocks.Add(block.ToString());
            block.Clear();
            if (until?.Invoke(blocks[^1]) == true)
            {
                break;
            }
        }
        return blocks;
    }

    /// <summary>A content delta (not the first chunk, which carries the role).</summary>
    public static bool IsContentDelta(string block) => block.Contains("\"content\":") && !block.Contains("\"role\"");
}
