using System.Collections.Concurrent;
using LoopRpt.Hosting;
using LoopRpt.Model;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace HostedRetraining;

/// <summary>What the run did, for the summary line at exit.</summary>
public sealed class RunTotals
{
    /// <summary>Scoring requests answered or failed.</summary>
    public long ScoringRequests;

    /// <summary>Scoring requests that failed (each logged, none stops the host).</summary>
    public long FailedRequests;

    /// <summary>Entries logged at Error or above, by any component.</summary>
    public long ErrorsLogged;
}

/// <summary>Counts the entries logged at Error or above into <see cref="RunTotals.ErrorsLogged"/>.</summary>
public sealed class ErrorCounter(RunTotals totals) : ILoggerProvider
{
    /// <inheritdoc/>
    public ILogger CreateLogger(string categoryName) => new Counter(totals);

    /// <inheritdoc/>
    public void Dispose() { }

    private sealed class Counter(RunTotals totals) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Error;
        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (logLevel >= LogLevel.Error) Interlocked.Increment(ref totals.ErrorsLogged);
        }
    }
}

/// <summary>Knobs of the simulated traffic.</summary>
public sealed class DemoOptions
{
    /// <summary>Stop after this many seconds (0: run until Ctrl+C).</summary>
    public int RunSeconds { get; set; }

    /// <summary>Time between new data files.</summary>
    public TimeSpan FeedEvery { get; set; } = TimeSpan.FromSeconds(20);

    /// <summary>Scoring requests in flight at once.</summary>
    public int Concurrency { get; set; } = 4;

    /// <summary>Time between bursts of requests.</summary>
    public TimeSpan RequestEvery { get; set; } = TimeSpan.FromMilliseconds(250);
}

/// <summary>Writes a new text file into the data folder now and then (temporary name, then rename, as producers should).</summary>
public sealed partial class DataFeeder(IOptions<RetrainingOptions> retraining, IOptions<DemoOptions> demo, ILogger<DataFeeder> logger) : BackgroundService
{
    private static readonly string[] Subjects = ["the cat", "a dog", "the looped model", "my neighbour", "the train"];
    private static readonly string[] Verbs = ["sat on", "looked at", "walked past", "thought about", "waited for"];
    private static readonly string[] Objects = ["the mat.", "a red ball.", "the old station.", "the quiet river.", "its own reflection."];

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var dir = Path.GetFullPath(retraining.Value.DataDirectory);
        Directory.CreateDirectory(dir);
        var rng = new Random(11);
        using var timer = new PeriodicTimer(demo.Value.FeedEvery);
        int n = Directory.GetFiles(dir, "*.txt").Length;
        do
        {
            var lines = Enumerable.Range(0, 200).Select(_ =>
                $"{Subjects[rng.Next(Subjects.Length)]} {Verbs[rng.Next(Verbs.Length)]} {Objects[rng.Next(Objects.Length)]}").ToList();
            var path = Path.Combine(dir, $"batch-{++n:D4}.txt");
            try
            {
                await File.WriteAllLinesAsync(path + ".tmp", lines, stoppingToken);
                File.Move(path + ".tmp", path, overwrite: true);
                Landed(logger, path);
            }
            catch (IOException e)
            {
                WriteFailed(logger, e, path);                  // a full or busy disk: logged, the next tick tries again
            }
        }
        while (await timer.WaitForNextTickAsync(stoppingToken));
    }

    [LoggerMessage(EventId = 9003, Level = LogLevel.Error, Message = "Demo: could not write {Path}; the host goes on")]
    private static partial void WriteFailed(ILogger logger, Exception error, string path);

    [LoggerMessage(EventId = 9000, Level = LogLevel.Information, Message = "Demo: new data file {Path}")]
    private static partial void Landed(ILogger logger, string path);
}

/// <summary>
/// Simulated requests: every tick, <see cref="DemoOptions.Concurrency"/> tasks each lease the current model and score a
/// prompt (Q-exit readout). Every 5 s it reports throughput, the versions that answered and the retraining status.
/// </summary>
public sealed partial class ScoringTraffic(ModelStore store, RetrainingService retraining, ITokenizerService tokenizer, IOptions<DemoOptions> demo,
                                           IHostApplicationLifetime lifetime, RunTotals totals, ILogger<ScoringTraffic> logger) : BackgroundService
{
    private static readonly string[] Prompts = ["the cat sat on", "a dog looked at the", "the looped model thought about", "my neighbour waited for the"];

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var options = demo.Value;
        if (options.RunSeconds > 0) lifetime.ApplicationStarted.Register(() => _ = StopLater(TimeSpan.FromSeconds(options.RunSeconds)));
        var perVersion = new ConcurrentDictionary<int, int>();
        double logProbSum = 0;
        int requests = 0, failed = 0;
        var report = DateTime.UtcNow + TimeSpan.FromSeconds(5);
        using var timer = new PeriodicTimer(options.RequestEvery);
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            var burst = Enumerable.Range(0, options.Concurrency).Select(i => Task.Run(() =>
            {
                // One failed request is logged and counted; it never stops the host (a faulted BackgroundService would).
                try
                {
                    using var lease = store.Acquire();               // the model stays alive until the lease ends, even across a swap
                    var prompt = tokenizer.Encode(Prompts[i % Prompts.Length]);
                    return lease.Score([prompt], ExitMode.Q(0.5))[0];
                }
                catch (Exception e)
                {
                    RequestFailed(logger, e);
                    return null;
                }
            }, stoppingToken)).ToArray();
            SequenceScore?[] scores;
            try
            {
                scores = await Task.WhenAll(burst);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                break;                                          // shutting down: bursts not started are not requests
            }
            foreach (var score in scores)
            {
                Interlocked.Increment(ref totals.ScoringRequests);
                if (score is null)
                {
                    Interlocked.Increment(ref totals.FailedRequests);
                    failed++;
                    continue;
                }
                perVersion.AddOrUpdate(score.Version, 1, (_, c) => c + 1);
                logProbSum += score.MeanLogProb;
                requests++;
            }
            if (DateTime.UtcNow >= report)
            {
                var s = retraining.Status;
                Served(logger, requests, failed, string.Join(", ", perVersion.OrderBy(kv => kv.Key).Select(kv => $"v{kv.Key}: {kv.Value}")),
                       logProbSum / Math.Max(1, requests), s.CurrentVersion, s.IsTraining, s.LastRound?.Outcome.ToString() ?? "none", s.LastError ?? "none");
                perVersion.Clear();
                logProbSum = 0;
                requests = 0;
                failed = 0;
                report = DateTime.UtcNow + TimeSpan.FromSeconds(5);
            }
        }
    }

    private async Task StopLater(TimeSpan after)
    {
        await Task.Delay(after);
        lifetime.StopApplication();
    }

    [LoggerMessage(EventId = 9001, Level = LogLevel.Information,
        Message = "Demo: {Requests} requests in 5 s, {Failed} failed ({Versions}), mean log-prob {MeanLogProb:F3}; serving v{Version}, training {IsTraining}, last round {LastOutcome}, last error {LastError}")]
    private static partial void Served(ILogger logger, int requests, int failed, string versions, double meanLogProb, int version, bool isTraining, string lastOutcome, string lastError);

    [LoggerMessage(EventId = 9002, Level = LogLevel.Error, Message = "Demo: a scoring request failed; the host goes on")]
    private static partial void RequestFailed(ILogger logger, Exception error);
}
