using System.Threading.Channels;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace LoopRpt.Hosting;

/// <summary>
/// Retrains the served model in the background. Rounds are triggered by a <see cref="PeriodicTimer"/>
/// (<see cref="RetrainingOptions.Period"/>), by new files in <see cref="RetrainingOptions.DataDirectory"/>, at start
/// (<see cref="RetrainingOptions.RunOnStart"/>, or to resume a round a shutdown interrupted), or by
/// <see cref="RequestRound"/>. Triggers that arrive during a round coalesce into one next round.
/// <para>Each round trains a copy of the serving model through the configured stages on one dedicated thread,
/// validates it against the serving model on held-out data, and promotes it through <see cref="ModelStore.Publish"/>
/// only if it wins by the margin. A failing round (bad data, divergence, disk full, any exception) is logged and
/// recorded in <see cref="Status"/>; the serving model keeps serving and the loop goes on. Host shutdown makes the
/// trainer write a checkpoint and stop; the round resumes from it at the next start.</para>
/// </summary>
public sealed class RetrainingService : BackgroundService
{
    private readonly ModelStore _store;
    private readonly RetrainingOptions _options;
    private readonly ILogger<RetrainingService> _logger;
    private readonly TimeProvider _time;
    private readonly RetrainingRound _round;
    private readonly Channel<string> _triggers = Channel.CreateBounded<string>(
        new BoundedChannelOptions(1) { FullMode = BoundedChannelFullMode.DropWrite, SingleReader = true });
    private RetrainingStatus _status = new();

    public RetrainingService(ModelStore store, IStageObjectiveFactory objectives, ITokenizerService tokenizer, IOptions<RetrainingOptions> options,
                             ILogger<RetrainingService> logger, TimeProvider? timeProvider = null)
    {
        _store = store;
        _options = options.Value;
        _logger = logger;
        _time = timeProvider ?? TimeProvider.System;
        _round = new RetrainingRound(store, objectives, tokenizer, _options, logger, _time);
    }

    /// <summary>A snapshot: current version, last round, last promotion, last error.</summary>
    public RetrainingStatus Status => Volatile.Read(ref _status) with { CurrentVersion = _store.CurrentVersion };

    /// <summary>Raised on a thread-pool thread after each round, once <see cref="Status"/> reflects it.</summary>
    public event EventHandler<RoundReport>? RoundCompleted;

    /// <summary>Asks for a round as soon as the current one (if any) ends. Returns false if one is already pending.</summary>
    public bool RequestRound(string reason = "manual") => _triggers.Writer.TryWrite(reason);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        await Task.Yield();
        using var thread = new TrainingThread("LoopRpt retraining");
        Log.ServiceStarted(_logger, _options.Period, Path.GetFullPath(_options.DataDirectory), _options.DataPollInterval,
            string.Join(" → ", _options.Stages.Select(s => $"{s.Kind}:{s.Steps}")));
        var loops = new List<Task>();
        if (_options.Period > TimeSpan.Zero) loops.Add(ScheduleAsync(stoppingToken));
        if (_options.DataPollInterval > TimeSpan.Zero) loops.Add(WatchDataAsync(stoppingToken));
        if (_round.HasInterruptedRound()) RequestRound("resume");
        else if (_options.RunOnStart) RequestRound("start");

        int rounds = 0;
        try
        {
            await foreach (var reason in _triggers.Reader.ReadAllAsync(stoppingToken))
            {
                var report = await RunRoundAsync(thread, reason, stoppingToken);
                rounds++;
                if (report.Outcome == RoundOutcome.Canceled) break;
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
        finally
        {
            try { await Task.WhenAll(loops); }
            catch (OperationCanceledException) { }
            Log.ServiceStopped(_logger, rounds);
        }
    }

    private async Task<RoundReport> RunRoundAsync(TrainingThread thread, string reason, CancellationToken stoppingToken)
    {
        Volatile.Write(ref _status, _status with { IsTraining = true });
        var started = _time.GetUtcNow();
        RoundReport report;
        try
        {
            report = await thread.RunAsync(() => _round.Run(reason, stoppingToken));
        }
        catch (Exception e)
        {
            // RetrainingRound turns failures into reports; this is the safety net that keeps the loop alive regardless.
            Log.RoundFailed(_logger, e, 0, _store.CurrentVersion);
            report = new RoundReport
            {
                Round = 0, Reason = reason, Outcome = RoundOutcome.Failed, StartedUtc = started, FinishedUtc = _time.GetUtcNow(),
                BaseVersion = _store.CurrentVersion, Message = e.Message, Error = e,
            };
        }

        var s = _status;
        bool counted = report.Outcome != RoundOutcome.Canceled;
        Volatile.Write(ref _status, s with
        {
            IsTraining = false,
            RoundsRun = s.RoundsRun + (counted ? 1 : 0),
            RoundsPromoted = s.RoundsPromoted + (report.Outcome == RoundOutcome.Promoted ? 1 : 0),
            RoundsFailed = s.RoundsFailed + (report.Outcome == RoundOutcome.Failed ? 1 : 0),
            LastRound = report,
            LastPromotionUtc = report.Outcome == RoundOutcome.Promoted ? report.FinishedUtc : s.LastPromotionUtc,
            LastError = report.Outcome == RoundOutcome.Failed ? report.Message : s.LastError,
            LastErrorUtc = report.Outcome == RoundOutcome.Failed ? report.FinishedUtc : s.LastErrorUtc,
        });
        try
        {
            RoundCompleted?.Invoke(this, report);
        }
        catch (Exception e)
        {
            Log.RoundObserverFailed(_logger, e);
        }
        return report;
    }

    private async Task ScheduleAsync(CancellationToken ct)
    {
        using var timer = new PeriodicTimer(_options.Period, _time);
        while (await timer.WaitForNextTickAsync(ct)) RequestRound("schedule");
    }

    /// <summary>Polls the data folder; a fingerprint that differs from the last one acted on and is stable over two polls triggers a round.</summary>
    private async Task WatchDataAsync(CancellationToken ct)
    {
        string? Fingerprint()
        {
            try { return DataFolder.Fingerprint(_options.DataDirectory); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }   // retried at the next poll
        }
        var actedOn = Fingerprint();       // data present at start is not "new"; RunOnStart trains on it
        var previous = actedOn;
        using var timer = new PeriodicTimer(_options.DataPollInterval, _time);
        while (await timer.WaitForNextTickAsync(ct))
        {
            var now = Fingerprint();
            if (now is not null && now == previous && now != actedOn)
            {
                actedOn = now;
                Log.DataChanged(_logger, Path.GetFullPath(_options.DataDirectory), DataFolder.Files(_options.DataDirectory).Count);
                RequestRound("data");
            }
            previous = now;
        }
    }
}

/// <summary>Loads the served model when the host starts, so a missing or corrupt store fails the start, not the first request.</summary>
internal sealed class ModelStoreInitializer(ModelStore store) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken)
    {
        store.EnsureLoaded();
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
