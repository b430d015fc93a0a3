namespace RecurFormer.Cli.Benchmarking;

/// <summary>
/// The share of the machine's CPU this process got over an interval, and how busy the machine was overall, from
/// /proc (this machine is shared: figures are only comparable within one run).
/// </summary>
public sealed class CpuShare
{
    private readonly (long Busy, long Total) _machine = ReadMachine();
    private readonly long _process = ReadProcess();

    /// <summary>(process share of all cores, machine busy share) since construction; NaN off Linux.</summary>
    public (double Process, double Machine) Measure()
    {
        var machine = ReadMachine();
        var total = machine.Total - _machine.Total;
        if (total <= 0)
        {
            return (double.NaN, double.NaN);
        }
        return ((ReadProcess() - _process) / (double)total, (machine.Busy - _machine.Busy) / (double)total);
    }

    /// <summary>Aggregate "cpu" line of /proc/stat: busy and total jiffies over all cores.</summary>
    private static (long Busy, long Total) ReadMachine()
    {
        if (!File.Exists("/proc/stat"))
        {
            return (0, 0);
        }
        var fields = File.ReadLines("/proc/stat").First().Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1).Select(long.Parse).ToArray();
        var total = fields.Take(8).Sum();
        var idle = fields[3] + fields[4]; // idle + iowait
        return (total - idle, total);
    }

    /// <summary>utime + stime of this process in jiffies, from /proc/self/stat.</summary>
    private static long ReadProcess()
    {
        if (!File.Exists("/proc/self/stat"))
        {
            return 0;
        }
        var text = File.ReadAllText("/proc/self/stat");
        var fields = text[(text.LastIndexOf(')') + 2)..].Split(' ');
        return long.Parse(fields[11]) + long.Parse(fields[12]);
    }
}
