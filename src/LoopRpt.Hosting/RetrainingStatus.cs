namespace LoopRpt.Hosting;

/// <summary>How a retraining round ended.</summary>
public enum RoundOutcome
{
    /// <summary>The candidate passed validation and is now served.</summary>
    Promoted,
    /// <summary>The candidate did not beat the serving model by the margin (or its metric was not finite).</summary>
    Rejected,
    /// <summary>Nothing to train on (no data files).</summary>
    Skipped,
    /// <summary>An exception (bad data, divergence, I/O); the serving model was not touched.</summary>
    Failed,
    /// <summary>Host shutdown; a checkpoint was written and the round resumes at the next start.</summary>
    Canceled,
}

/// <summary>What one round did.</summary>
public sealed record RoundReport
{
    public required int Round { get; init; }
    /// <summary>What triggered it: "schedule", "data", "start" or the reason given to <see cref="RetrainingService.RequestRound"/>.</summary>
    public required string Reason { get; init; }
    public required RoundOutcome Outcome { get; init; }
    public required DateTimeOffset StartedUtc { get; init; }
    public required DateTimeOffset FinishedUtc { get; init; }
    /// <summary>The serving version the round trained from.</summary>
    public required int BaseVersion { get; init; }
    /// <summary>The version promoted, if any.</summary>
    public int? PromotedVersion { get; init; }
    /// <summary>Held-out metric of the candidate and of the serving model (<see cref="RetrainingOptions.Metric"/>).</summary>
    public double? CandidateMetric { get; init; }
    public double? ServingMetric { get; init; }
    /// <summary>Global step the round resumed from after a shutdown, if it did.</summary>
    public long? ResumedFromStep { get; init; }
    /// <summary>Why the candidate was rejected or the round skipped or failed.</summary>
    public string? Message { get; init; }
    /// <summary>The exception of a failed round.</summary>
    public Exception? Error { get; init; }
}

/// <summary>A snapshot of the retraining service for health endpoints and dashboards.</summary>
public sealed record RetrainingStatus
{
    /// <summary>Version being served.</summary>
    public int CurrentVersion { get; init; }
    /// <summary>A round is running now.</summary>
    public bool IsTraining { get; init; }
    public int RoundsRun { get; init; }
    public int RoundsPromoted { get; init; }
    public int RoundsFailed { get; init; }
    /// <summary>The last finished round.</summary>
    public RoundReport? LastRound { get; init; }
    public DateTimeOffset? LastPromotionUtc { get; init; }
    /// <summary>Message of the last failure and when it happened (kept after later successful rounds).</summary>
    public string? LastError { get; init; }
    public DateTimeOffset? LastErrorUtc { get; init; }
}
