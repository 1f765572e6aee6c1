using System.Threading.Channels;
using LoopRpt.Training;
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
    private readonly ObjectiveKindRegistry _kinds;
    private readonly ITokenizerService _tokenizer;
    private readonly IOptions<RetrainingOptions> _optionsAccessor;
    private readonly ILogger<RetrainingService> _logger;
    private readonly TimeProvider _time;
    private RetrainingRound? _roundCache;
    private readonly Channel<string> _triggers = Channel.CreateBounded<string>(
        new BoundedChannelOptions(1) { FullMode = BoundedChannelFullMode.DropWrite, SingleReader = true });
    private RetrainingStatus _status = new();

    public RetrainingService(ModelStore store, IOptions<ObjectiveKindRegistry> kinds, ITokenizerService tokenizer, IOptions<RetrainingOptions> options,
                             ILogger<RetrainingService> logger, TimeProvider? timeProvider = null)
    {
        // Options are read when the service runs, not here: hosted services are constructed before ValidateOnStart runs.
        _store = store;
        _kinds = kinds.Value;
        _tokenizer = tokenizer;
        _optionsAccessor = options;
        _logger = logger;
        _time = timeProvider ?? TimeProvider.System;
    }

    private RetrainingOptions Settings => _optionsAccessor.Value;

    private RetrainingRound Round => _roundCache ??= new RetrainingRound(_store, _kinds, _tokenizer, Settings, _logger, _time);

    /// <summary>A snapshot: current version, last round, last promotion, last error.</summary>
    public RetrainingStatus Status => Volatile.Read(ref _status) with { CurrentVersion = _store.CurrentVersion };

    /// <summary>Raised on a thread-pool thread after each round, once <see cref="Status"/> reflects it.</summary>
    public event EventHandler<RoundReport>? RoundCompleted;

    /// <summary>Asks for a round as soon as the current one (if any) ends. Returns false if one is already pending.</summary>
    public bool RequestRound(string reason = "manual") => _triggers.Writer.TryWrite(reason);

    /// <summary>The token of the running <see cref="ExecuteAsync"/> (tests use it to act exactly when shutdown begins).</summary>
    internal CancellationToken StoppingToken { get; private set; }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        StoppingToken = stoppingToken;
        await Task.Yield();
        using var thread = new TrainingThread("LoopRpt retraining");
        Log.ServiceStarted(_logger, Settings.Period, Path.GetFullPath(Settings.DataDirectory), Settings.DataPollInterval,
            string.Join(" → ", Settings.Stages.Select(s => $"{s.Kind}:{s.Steps}")));
        var loops = new List<Task>();
        if (Settings.Period > TimeSpan.Zero) loops.Add(ScheduleAsync(stoppingToken));
        if (Settings.DataPollInterval > TimeSpan.Zero) loops.Add(WatchDataAsync(stoppingToken));
        if (Round.HasInterruptedRound()) RequestRound("resume");
        else if (Settings.RunOnStart) RequestRound("start");

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
            report = await thread.RunAsync(() => Round.Run(reason, stoppingToken));
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
        using var timer = new PeriodicTimer(Settings.Period, _time);
        while (await timer.WaitForNextTickAsync(ct)) RequestRound("schedule");
    }

    /// <summary>
    /// Polls the data folder. A non-empty folder whose fingerprint is stable over two polls and differs from what the last
    /// round trained on (persisted in the round state, so data that landed while the host was down counts) triggers a round.
    /// </summary>
    private async Task WatchDataAsync(CancellationToken ct)
    {
        string? Fingerprint()
        {
            try { return DataFolder.Files(Settings.DataDirectory).Count == 0 ? null : DataFolder.Fingerprint(Settings.DataDirectory); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }   // retried at the next poll
        }
        string? previous = null, requested = null;
        using var timer = new PeriodicTimer(Settings.DataPollInterval, _time);
        while (await timer.WaitForNextTickAsync(ct))
        {
            var now = Fingerprint();
            if (now is not null && now == previous && now != requested && now != Round.LastDataFingerprint())
            {
                requested = now;
                Log.DataChanged(_logger, Path.GetFullPath(Settings.DataDirectory), DataFolder.Files(Settings.DataDirectory).Count);
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
