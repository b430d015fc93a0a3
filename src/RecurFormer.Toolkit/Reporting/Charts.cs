using ScottPlot;

namespace RecurFormer.Toolkit.Reporting;

/// <summary>PNG charts of the toolkit (ScottPlot renders headless through SkiaSharp; no display needed).</summary>
public static class Charts
{
    /// <summary>A heatmap of values[row, column], e.g. layers × heads; row r is drawn at y = r (row 0 at the bottom).</summary>
    public static void Heatmap(string path, double[,] values, string title, string rowLabel, string columnLabel)
    {
        // ScottPlot draws the first row of the array at the top: flip so that the y ticks name the rows.
        var rows = values.GetLength(0);
        var columns = values.GetLength(1);
        var flipped = new double[rows, columns];
        for (var r = 0; r < rows; r++)
        {
            for (var c = 0; c < columns; c++)
            {
                flipped[rows - 1 - r, c] = values[r, c];
            }
        }
        var plot = new Plot();
        var heatmap = plot.Add.Heatmap(flipped);
        heatmap.Colormap = new ScottPlot.Colormaps.Viridis();
        plot.Add.ColorBar(heatmap);
        plot.Title(title);
        plot.YLabel(rowLabel);
        plot.XLabel(columnLabel);
        plot.SavePng(path, 800, 600);
    }

    /// <summary>Line chart of named series of (x, y) points.</summary>
    public static void Lines(string path, IEnumerable<(string Name, double[] X, double[] Y)> series, string title, string xLabel, string yLabel, bool logY = false, bool pointsOnly = false)
    {
        var plot = new Plot();
        foreach (var (name, x, y) in series)
        {
            if (x.Length == 0)
            {
                continue;
            }
            var values = logY ? y.Select(v => Math.Log10(Math.Max(v, 1e-12))).ToArray() : y;
            var line = pointsOnly ? plot.Add.ScatterPoints(x, values) : plot.Add.ScatterLine(x, values);
            if (pointsOnly)
            {
                line.MarkerSize = 9;
            }
            line.LegendText = name;
        }
        plot.ShowLegend();
        plot.Title(title);
        plot.XLabel(xLabel);
        plot.YLabel(logY ? $"log10 {yLabel}" : yLabel);
        plot.SavePng(path, 900, 600);
    }

    /// <summary>
    /// Measured series as lines with a marker at each point, and levels (values that do not depend on x) as dashed
    /// lines across the whole x range.
    /// </summary>
    /// <param name="legend">Where the legend goes: the corner the curves leave free (upper right for falling ones).</param>
    public static void Curves(string path, IEnumerable<(string Name, double[] X, double[] Y)> series, IEnumerable<(string Name, double Y)> levels,
        string title, string xLabel, string yLabel, Alignment legend)
    {
        var plot = new Plot();
        var all = series.Where(s => s.X.Length > 0).ToArray();
        var (left, right) = all.Length == 0 ? (0.0, 1.0) : (Math.Min(0, all.Min(s => s.X.Min())), all.Max(s => s.X.Max()));
        foreach (var (name, x, y) in all)
        {
            var line = plot.Add.Scatter(x, y);
            line.MarkerSize = 7;
            line.LegendText = name;
        }
        foreach (var (name, y) in levels)
        {
            var line = plot.Add.ScatterLine(new[] { left, right }, new[] { y, y });
            line.LinePattern = LinePattern.Dashed;
            line.LegendText = name;
        }
        plot.ShowLegend(legend);
        plot.Title(title);
        plot.XLabel(xLabel);
        plot.YLabel(yLabel);
        plot.SavePng(path, 900, 600);
    }
}
