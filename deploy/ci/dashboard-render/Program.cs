using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using ScottPlot;
using SkiaSharp;

// Usage: DashboardRender PROMETHEUS_URL DASHBOARD.json OUT.png FROM_UNIX TO_UNIX
// Every panel of the dashboard is drawn where its gridPos puts it: each target's PromQL is asked of Prometheus's
// query_range API with Grafana's variables replaced ($instance = all servers, $__rate_interval = 15s, which is
// four scrapes at the 1 s interval deploy/ci/check.sh uses, as Grafana computes it), time series as lines
// (stacked where the panel stacks), stat panels as their last value.
if (args.Length != 5)
{
    Console.Error.WriteLine("usage: DashboardRender PROMETHEUS_URL DASHBOARD.json OUT.png FROM_UNIX TO_UNIX");
    return 2;
}
var (prometheus, dashboardFile, output) = (args[0].TrimEnd('/'), args[1], args[2]);
var (from, to) = (long.Parse(args[3], CultureInfo.InvariantCulture), long.Parse(args[4], CultureInfo.InvariantCulture));
const int Step = 2, CellWidth = 80, CellHeight = 34;

using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
using var dashboard = JsonDocument.Parse(File.ReadAllText(dashboardFile));
var panels = dashboard.RootElement.GetProperty("panels").EnumerateArray().ToList();
var bottom = panels.Max(p => p.GetProperty("gridPos").GetProperty("y").GetInt32() + p.GetProperty("gridPos").GetProperty("h").GetInt32());
const int TitleHeight = 44;
var width = 24 * CellWidth;
var height = TitleHeight + bottom * CellHeight;

using var surface = SKSurface.Create(new SKImageInfo(width, height));
var canvas = surface.Canvas;
canvas.Clear(SKColor.Parse("#111217"));
using var typeface = SKTypeface.FromFamilyName("DejaVu Sans", SKFontStyle.Bold);
using var titleFont = new SKFont(typeface, 22);
using var rowFont = new SKFont(typeface, 16);
using var textPaint = new SKPaint { Color = SKColor.Parse("#ccccdc"), IsAntialias = true };
var title = dashboard.RootElement.GetProperty("title").GetString();
canvas.DrawText($"{title} — {DateTimeOffset.FromUnixTimeSeconds(from):yyyy-MM-dd HH:mm:ss}–{DateTimeOffset.FromUnixTimeSeconds(to):HH:mm:ss} UTC (rendered from Prometheus with ScottPlot)",
    12, 30, titleFont, textPaint);

var series = 0;
foreach (var panel in panels)
{
    var grid = panel.GetProperty("gridPos");
    var (x, y) = (grid.GetProperty("x").GetInt32() * CellWidth, TitleHeight + grid.GetProperty("y").GetInt32() * CellHeight);
    var (w, h) = (grid.GetProperty("w").GetInt32() * CellWidth, grid.GetProperty("h").GetInt32() * CellHeight);
    var type = panel.GetProperty("type").GetString();
    var panelTitle = panel.GetProperty("title").GetString() ?? "";
    if (type == "row")
    {
        canvas.DrawText(panelTitle, x + 8, y + 24, rowFont, textPaint);
        continue;
    }
    var unit = panel.GetProperty("fieldConfig").GetProperty("defaults").TryGetProperty("unit", out var u) ? u.GetString() ?? "" : "";
    var results = new List<(string Legend, double[] Times, double[] Values)>();
    foreach (var target in panel.GetProperty("targets").EnumerateArray())
    {
        var expr = target.GetProperty("expr").GetString()!.Replace("$__rate_interval", "15s").Replace("$instance", ".*");
        var legend = target.GetProperty("legendFormat").GetString() ?? "";
        results.AddRange(await QueryRange(http, prometheus, expr, legend, from, to, Step));
    }
    series += results.Count;
    var plot = type == "stat" ? StatPanel(panelTitle, unit, results) : TimeSeriesPanel(panel, panelTitle, unit, results);
    using var bitmap = SKBitmap.Decode(plot.GetImageBytes(w - 6, h - 6, ImageFormat.Png));
    canvas.DrawBitmap(bitmap, x + 3, y + 3);
    if (type == "stat")
    {
        canvas.DrawText(panelTitle, x + 12, y + 24, rowFont, textPaint);
    }
}

using (var image = surface.Snapshot())
using (var png = image.Encode(SKEncodedImageFormat.Png, 100))
using (var file = File.Create(output))
{
    png.SaveTo(file);
}
Console.WriteLine($"{output}: {panels.Count} panels, {series} series, {width}x{height}");
return series > 0 ? 0 : 1;

static async Task<List<(string, double[], double[])>> QueryRange(HttpClient http, string prometheus, string expr, string legend, long from, long to, int step)
{
    var url = $"{prometheus}/api/v1/query_range?query={Uri.EscapeDataString(expr)}&start={from}&end={to}&step={step}";
    using var response = JsonDocument.Parse(await http.GetStringAsync(url));
    var list = new List<(string, double[], double[])>();
    foreach (var s in response.RootElement.GetProperty("data").GetProperty("result").EnumerateArray())
    {
        var labels = s.GetProperty("metric");
        var name = Regex.Replace(legend, @"\{\{\s*(\w+)\s*\}\}", m => labels.TryGetProperty(m.Groups[1].Value, out var v) ? v.GetString() ?? "" : "");
        var points = s.GetProperty("values").EnumerateArray()
            .Select(p => (T: p[0].GetDouble(), V: double.Parse(p[1].GetString()!, CultureInfo.InvariantCulture)))
            .ToList();
        list.Add((name.Length > 0 ? name : expr, points.Select(p => DateTimeOffset.FromUnixTimeMilliseconds((long)(p.T * 1000)).UtcDateTime.ToOADate()).ToArray(), points.Select(p => p.V).ToArray()));
    }
    return list;
}

static (double Factor, string Label) Scale(string unit, double max) => unit switch
{
    "bytes" when max >= 1 << 20 => (1.0 / (1 << 20), "MiB"),
    "bytes" => (1.0 / 1024, "KiB"),
    "percentunit" => (100, "%"),
    "s" when max < 1 => (1000, "ms"),
    "s" => (1, "s"),
    "reqps" => (1, "req/s"),
    _ => (1, ""),
};

static Plot Styled(string title)
{
    var plot = new Plot();
    plot.FigureBackground.Color = Color.FromHex("#181b1f");
    plot.DataBackground.Color = Color.FromHex("#181b1f");
    plot.Axes.Color(Color.FromHex("#ccccdc"));
    plot.Grid.MajorLineColor = Color.FromHex("#2c3235");
    plot.Legend.BackgroundColor = Color.FromHex("#22252b");
    plot.Legend.FontColor = Color.FromHex("#ccccdc");
    plot.Legend.OutlineColor = Color.FromHex("#2c3235");
    plot.Title(title, size: 15);
    return plot;
}

static Plot TimeSeriesPanel(JsonElement panel, string title, string unit, List<(string Legend, double[] Times, double[] Values)> results)
{
    var plot = Styled(title);
    var max = results.SelectMany(r => r.Values).Where(double.IsFinite).DefaultIfEmpty(0).Max();
    var (factor, label) = Scale(unit, max);
    plot.YLabel(label);
    var defaults = panel.GetProperty("fieldConfig").GetProperty("defaults");
    var stacked = defaults.GetProperty("custom").GetProperty("stacking").GetProperty("mode").GetString() == "normal";
    // Series a panel override takes out of the stack (the "without replacement" line) are drawn dashed on top.
    var unstacked = panel.GetProperty("fieldConfig").GetProperty("overrides").EnumerateArray()
        .Select(o => o.GetProperty("matcher").GetProperty("options").GetString()).ToHashSet();
    var palette = new ScottPlot.Palettes.Category10();
    var stackBase = new Dictionary<double, double>();
    var layers = new List<(string Legend, double[] Times, double[] Values, Color Color)>();
    var lines = new List<(string Legend, double[] Times, double[] Values, Color Color)>();
    var index = 0;
    foreach (var (legend, times, values) in results)
    {
        var color = palette.GetColor(index++);
        var scaled = values.Select(v => double.IsFinite(v) ? v * factor : double.NaN).ToArray();
        if (stacked && !unstacked.Contains(legend))
        {
            for (var i = 0; i < times.Length; i++)
            {
                var below = stackBase.GetValueOrDefault(times[i]);
                if (double.IsFinite(scaled[i])) scaled[i] += below;
                stackBase[times[i]] = double.IsFinite(scaled[i]) ? scaled[i] : below;
            }
            layers.Add((legend, times, scaled, color));
            continue;
        }
        lines.Add((legend, times, scaled, color));
    }
    // Stacked layers: the top of the stack first, so that each lower layer paints its own band over it.
    for (var i = layers.Count - 1; i >= 0; i--)
    {
        var (legend, times, values, color) = layers[i];
        var area = plot.Add.Scatter(times, values);
        area.LegendText = legend;
        area.MarkerSize = 0;
        area.LineWidth = 1;
        area.Color = color;
        area.FillY = true;
        area.FillYValue = 0;
        area.FillYColor = color.WithAlpha(0.85);
    }
    // Lines over the areas, so that a line equal to the top of the stack stays visible.
    foreach (var (legend, times, values, color) in lines)
    {
        var line = plot.Add.Scatter(times, values);
        line.LegendText = legend;
        line.MarkerSize = 0;
        line.LineWidth = 2;
        line.Color = unstacked.Contains(legend) ? Colors.Red : color;
        if (unstacked.Contains(legend)) line.LinePattern = LinePattern.Dashed;
    }
    if (results.Count == 0)
    {
        plot.Add.Annotation("no data");
    }
    plot.Axes.DateTimeTicksBottom().TickGenerator = new ScottPlot.TickGenerators.DateTimeAutomatic { LabelFormatter = t => t.ToString("HH:mm:ss", CultureInfo.InvariantCulture) };
    plot.Axes.Bottom.TickLabelStyle.ForeColor = Color.FromHex("#ccccdc");
    if (defaults.TryGetProperty("max", out var m) && unit == "percentunit") plot.Axes.SetLimitsY(0, m.GetDouble() * factor * 1.05);
    else plot.Axes.SetLimitsY(0, Math.Max(max * factor * 1.15, 1e-9));
    plot.ShowLegend(Alignment.UpperLeft);
    return plot;
}

static Plot StatPanel(string title, string unit, List<(string Legend, double[] Times, double[] Values)> results)
{
    var plot = Styled(title);
    var last = results.SelectMany(r => r.Values.Where(double.IsFinite).TakeLast(1)).DefaultIfEmpty(double.NaN).Sum();
    var text = double.IsNaN(last) ? "no data" : unit switch
    {
        "bytes" => last >= 1 << 20 ? $"{last / (1 << 20):0.0} MiB" : $"{last / 1024:0.0} KiB",
        "percentunit" => $"{last * 100:0.0}%",
        "reqps" => $"{last:0.00} req/s",
        _ => $"{last:0.##}",
    };
    if (results.Count > 0)
    {
        var (_, times, values) = results[0];
        var spark = plot.Add.Scatter(times, values.Select(v => double.IsFinite(v) ? v : 0).ToArray());
        spark.MarkerSize = 0;
        spark.Color = Color.FromHex("#73bf69");
        spark.FillY = true;
        spark.FillYColor = Color.FromHex("#73bf69").WithAlpha(0.25);
    }
    plot.Axes.Frameless();
    plot.HideGrid();
    var label = plot.Add.Text(text, 0, 0);
    label.LabelFontSize = 34;
    label.LabelFontColor = Color.FromHex("#73bf69");
    label.LabelBold = true;
    label.LabelAlignment = Alignment.MiddleCenter;
    // The number sits in the middle of the panel, above the sparkline.
    var allTimes = results.SelectMany(r => r.Times).DefaultIfEmpty(0).ToArray();
    var allValues = results.SelectMany(r => r.Values).Where(double.IsFinite).DefaultIfEmpty(0).ToArray();
    var (xMin, xMax) = (allTimes.Min(), allTimes.Max());
    var yMax = Math.Max(allValues.Max(), 1e-9);
    label.Location = new Coordinates((xMin + xMax) / 2, yMax * 1.25);
    plot.Axes.SetLimits(xMin, xMax == xMin ? xMin + 1 : xMax, 0, yMax * 2.1);
    return plot;
}
