// A worker service that serves scoring requests from LoopRpt's model store while the retraining service trains,
// validates and promotes new model versions in the background (docs/hosting.md).
//
//   dotnet run -c Release --project examples/HostedRetraining                  # until Ctrl+C (shutdown checkpoints a running round)
//   dotnet run -c Release --project examples/HostedRetraining -- --minutes 30  # a soak run: stops after 30 minutes
//   dotnet run -c Release --project examples/HostedRetraining -- --Demo:RunSeconds=90
//
// At exit it prints one summary line: minutes, rounds (promoted, rejected/skipped, failed), the serving version,
// scoring requests (failed) and the entries logged at Error. No single failure stops the host: a failed scoring request
// or data write is logged and the loop goes on; a failed round is logged and the next one runs.
// Files go under ./hosted-retraining-run/ (relative to the working directory): models/v0001..., data/*.txt.
using System.Diagnostics;
using System.Globalization;
using HostedRetraining;
using LoopRpt.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { Args = args, ContentRootPath = AppContext.BaseDirectory });
if (builder.Configuration["minutes"] is { } minutes)                 // --minutes N (the command-line provider reads it as a key)
{
    if (!double.TryParse(minutes, NumberStyles.Float, CultureInfo.InvariantCulture, out var m) || !(m > 0) || m > 7 * 24 * 60)
    {
        Console.Error.WriteLine($"HostedRetraining: --minutes must be a positive number of minutes (at most a week), got '{minutes}'.");
        return 2;
    }
    builder.Configuration["Demo:RunSeconds"] = Math.Max(1, (int)Math.Round(m * 60)).ToString(CultureInfo.InvariantCulture);
}
var totals = new RunTotals();
builder.Services.AddSingleton(totals);
builder.Logging.AddProvider(new ErrorCounter(totals));
builder.Services.AddLoopRptRetraining(builder.Configuration.GetSection("LoopRpt"));
builder.Services.Configure<DemoOptions>(builder.Configuration.GetSection("Demo"));
builder.Services.AddHostedService<DataFeeder>();        // new data lands in the folder now and then
builder.Services.AddHostedService<ScoringTraffic>();    // concurrent scoring requests, all the time
using var host = builder.Build();
var clock = Stopwatch.StartNew();
await host.StartAsync();
await host.WaitForShutdownAsync();                      // Ctrl+C or the end of --minutes; stops the services (RunAsync would also dispose the host)
var s = host.Services.GetRequiredService<RetrainingService>().Status;
Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
    $"HostedRetraining summary: {clock.Elapsed.TotalMinutes:F1} min, rounds {s.RoundsRun} (promoted {s.RoundsPromoted}, " +
    $"not promoted {s.RoundsRun - s.RoundsPromoted - s.RoundsFailed}, failed {s.RoundsFailed}), serving v{s.CurrentVersion}, " +
    $"scoring requests {Interlocked.Read(ref totals.ScoringRequests)} (failed {Interlocked.Read(ref totals.FailedRequests)}), " +
    $"errors logged {Interlocked.Read(ref totals.ErrorsLogged)}"));
return Interlocked.Read(ref totals.ErrorsLogged) == 0 ? 0 : 1;
