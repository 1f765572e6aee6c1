using Microsoft.Extensions.Logging;

namespace LoopRpt.Hosting;

/// <summary>Stable event ids of LoopRpt.Hosting's log entries (1000s: model store, 2000s: retraining), for log filters and alerts.</summary>
public static class LoopRptEventIds
{
    public const int ModelLoaded = 1000;
    public const int ModelSeeded = 1001;
    public const int ModelPublished = 1002;
    public const int ModelDisposed = 1003;
    public const int VersionPruned = 1004;
    public const int CurrentPointerStale = 1005;
    public const int VersionSaved = 1006;
    public const int VersionPromoted = 1007;
    public const int RefreshFailed = 1008;

    public const int ServiceStarted = 2000;
    public const int RoundStarting = 2001;
    public const int RoundPromoted = 2002;
    public const int RoundRejected = 2003;
    public const int RoundFailed = 2004;
    public const int RoundSkipped = 2005;
    public const int RoundCanceled = 2006;
    public const int TrainingProgress = 2007;
    public const int RoundResuming = 2008;
    public const int DataChanged = 2009;
    public const int Validated = 2010;
    public const int RoundObserverFailed = 2011;
    public const int ServiceStopped = 2012;
}

/// <summary>Source-generated log methods (message templates, no interpolation).</summary>
internal static partial class Log
{
    [LoggerMessage(EventId = LoopRptEventIds.ModelLoaded, Level = LogLevel.Information, Message = "Serving model version {Version} from {Directory} on {Device}")]
    public static partial void ModelLoaded(ILogger logger, int version, string directory, string device);

    [LoggerMessage(EventId = LoopRptEventIds.ModelSeeded, Level = LogLevel.Information, Message = "Model store {Root} was empty; created version 1 from {Source}")]
    public static partial void ModelSeeded(ILogger logger, string root, string source);

    [LoggerMessage(EventId = LoopRptEventIds.ModelPublished, Level = LogLevel.Information, Message = "Promoted model version {Version} ({Directory}); version {OldVersion} is disposed once its last lease is released")]
    public static partial void ModelPublished(ILogger logger, int version, string directory, int oldVersion);

    [LoggerMessage(EventId = LoopRptEventIds.ModelDisposed, Level = LogLevel.Debug, Message = "Model version {Version} disposed (no lease holds it)")]
    public static partial void ModelDisposed(ILogger logger, int version);

    [LoggerMessage(EventId = LoopRptEventIds.VersionPruned, Level = LogLevel.Information, Message = "Deleted model version directory {Directory} (history keeps {Keep})")]
    public static partial void VersionPruned(ILogger logger, string directory, int keep);

    [LoggerMessage(EventId = LoopRptEventIds.CurrentPointerStale, Level = LogLevel.Warning, Message = "The current-model pointer {Pointer} names {Name}, which is not a complete model directory; serving the newest complete version instead")]
    public static partial void CurrentPointerStale(ILogger logger, string pointer, string name);

    [LoggerMessage(EventId = LoopRptEventIds.VersionSaved, Level = LogLevel.Information, Message = "Saved model version {Version} ({Directory}); promoted: {Promoted}")]
    public static partial void VersionSaved(ILogger logger, int version, string directory, bool promoted);

    [LoggerMessage(EventId = LoopRptEventIds.VersionPromoted, Level = LogLevel.Information, Message = "The current pointer of {Root} names version {Version}")]
    public static partial void VersionPromoted(ILogger logger, int version, string root);

    [LoggerMessage(EventId = LoopRptEventIds.RefreshFailed, Level = LogLevel.Warning, Message = "Could not load the version the current pointer of {Root} names; version {Version} keeps serving and the next poll retries")]
    public static partial void RefreshFailed(ILogger logger, Exception exception, string root, int version);

    [LoggerMessage(EventId = LoopRptEventIds.ServiceStarted, Level = LogLevel.Information, Message = "Retraining service started: period {Period}, data {DataDirectory} polled every {PollInterval}, stages {Stages}")]
    public static partial void ServiceStarted(ILogger logger, TimeSpan period, string dataDirectory, TimeSpan pollInterval, string stages);

    [LoggerMessage(EventId = LoopRptEventIds.ServiceStopped, Level = LogLevel.Information, Message = "Retraining service stopped after {Rounds} rounds")]
    public static partial void ServiceStopped(ILogger logger, int rounds);

    [LoggerMessage(EventId = LoopRptEventIds.RoundStarting, Level = LogLevel.Information, Message = "Retraining round {Round} ({Reason}) starts from model version {BaseVersion} with {TrainTokens} training and {HeldOutTokens} held-out tokens")]
    public static partial void RoundStarting(ILogger logger, int round, string reason, int baseVersion, long trainTokens, long heldOutTokens);

    [LoggerMessage(EventId = LoopRptEventIds.RoundResuming, Level = LogLevel.Information, Message = "Retraining round {Round} resumes from checkpoint {Checkpoint}")]
    public static partial void RoundResuming(ILogger logger, int round, string checkpoint);

    [LoggerMessage(EventId = LoopRptEventIds.TrainingProgress, Level = LogLevel.Debug, Message = "Round {Round} stage {Stage} step {Step}/{StageSteps}: loss {Loss:F4}, lr {LearningRate:E3}, {TokensPerSecond:F0} tok/s")]
    public static partial void TrainingProgress(ILogger logger, int round, string stage, long step, long stageSteps, double loss, double learningRate, double tokensPerSecond);

    [LoggerMessage(EventId = LoopRptEventIds.Validated, Level = LogLevel.Information, Message = "Round {Round} validation ({Metric}, exit {Exit}, {Tokens} tokens): candidate {Candidate:F4}, serving {Serving:F4}, margin {Margin}")]
    public static partial void Validated(ILogger logger, int round, ValidationMetric metric, string exit, long tokens, double candidate, double serving, double margin);

    [LoggerMessage(EventId = LoopRptEventIds.RoundPromoted, Level = LogLevel.Information, Message = "Retraining round {Round} promoted model version {Version}")]
    public static partial void RoundPromoted(ILogger logger, int round, int version);

    [LoggerMessage(EventId = LoopRptEventIds.RoundRejected, Level = LogLevel.Information, Message = "Retraining round {Round} rejected its candidate: {Why}; version {Version} keeps serving")]
    public static partial void RoundRejected(ILogger logger, int round, string why, int version);

    [LoggerMessage(EventId = LoopRptEventIds.RoundSkipped, Level = LogLevel.Information, Message = "Retraining round {Round} skipped: {Why}")]
    public static partial void RoundSkipped(ILogger logger, int round, string why);

    [LoggerMessage(EventId = LoopRptEventIds.RoundFailed, Level = LogLevel.Error, Message = "Retraining round {Round} failed; version {Version} keeps serving and the next round runs as scheduled")]
    public static partial void RoundFailed(ILogger logger, Exception exception, int round, int version);

    [LoggerMessage(EventId = LoopRptEventIds.RoundCanceled, Level = LogLevel.Information, Message = "Retraining round {Round} stopped by host shutdown; it resumes from {Checkpoint} at the next start")]
    public static partial void RoundCanceled(ILogger logger, int round, string checkpoint);

    [LoggerMessage(EventId = LoopRptEventIds.DataChanged, Level = LogLevel.Information, Message = "New data in {DataDirectory} ({Files} files); starting a round")]
    public static partial void DataChanged(ILogger logger, string dataDirectory, int files);

    [LoggerMessage(EventId = LoopRptEventIds.RoundObserverFailed, Level = LogLevel.Warning, Message = "A RoundCompleted handler threw")]
    public static partial void RoundObserverFailed(ILogger logger, Exception exception);
}
