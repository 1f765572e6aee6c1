using System.Text.Json;
using System.Text.Json.Serialization;
using LoopRpt.Checkpoints;
using LoopRpt.Data;
using LoopRpt.Model;
using LoopRpt.Training;
using Microsoft.Extensions.Logging;

namespace LoopRpt.Hosting;

/// <summary>
/// One retraining round, run synchronously on the training thread:
/// data → train a copy of the serving model (resuming an interrupted round) → validate candidate vs serving on held-out
/// data → promote or reject. Its working folder holds <c>state.json</c> (round number, base version, plan, status) and
/// <c>checkpoints/</c> (the core trainer's atomic step directories).
/// </summary>
internal sealed class RetrainingRound
{
    public const string StateFile = "state.json";

    private readonly ModelStore _store;
    private readonly ObjectiveKindRegistry _kinds;
    private readonly ITokenizerService _tokenizer;
    private readonly RetrainingOptions _options;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;

    public RetrainingRound(ModelStore store, ObjectiveKindRegistry kinds, ITokenizerService tokenizer, RetrainingOptions options, ILogger logger, TimeProvider time)
    {
        _store = store;
        _kinds = kinds;
        _tokenizer = tokenizer;
        _options = options;
        _logger = logger;
        _time = time;
        WorkDirectory = Path.GetFullPath(options.WorkDirectory ?? Path.Combine(store.Root, "training"));
    }

    public string WorkDirectory { get; }

    public string CheckpointDirectory => Path.Combine(WorkDirectory, "checkpoints");

    /// <summary>True when a round was stopped by a shutdown and should resume.</summary>
    public bool HasInterruptedRound() => ReadState() is { Status: RoundStatus.Running };

    /// <summary>Fingerprint of the data folder as the last round saw it (null before the first round).</summary>
    public string? LastDataFingerprint() => ReadState()?.DataFingerprint;

    /// <summary>Runs one round; every outcome but an unexpected bug is a report (failures included).</summary>
    public RoundReport Run(string reason, CancellationToken ct)
    {
        var started = _time.GetUtcNow();
        using var lease = _store.Acquire();
        var previous = ReadState();
        var plan = _options.Stages.Select(s => $"{s.Kind.ToLowerInvariant()}:{s.Steps}").ToList();
        bool resume = previous is { Status: RoundStatus.Running } && previous.BaseVersion == lease.Version && previous.Plan.SequenceEqual(plan);
        int round = resume ? previous!.Round : (previous?.Round ?? 0) + 1;
        RoundReport Report(RoundOutcome outcome) => new()
        {
            Round = round, Reason = reason, Outcome = outcome, StartedUtc = started, FinishedUtc = _time.GetUtcNow(), BaseVersion = lease.Version,
        };

        string? fingerprint = null;
        RoundState State(RoundStatus status) => new() { Round = round, BaseVersion = lease.Version, Plan = plan, Status = status, DataFingerprint = fingerprint };
        try
        {
            if (!resume) RemoveCheckpoints();
            fingerprint = DataFolder.Fingerprint(_options.DataDirectory);
            if (DataFolder.Files(_options.DataDirectory).Count == 0)
            {
                WriteState(State(RoundStatus.Done));
                var why = $"no *.txt or *.tokens files in '{Path.GetFullPath(_options.DataDirectory)}'";
                Log.RoundSkipped(_logger, round, why);
                return Report(RoundOutcome.Skipped) with { Message = why };
            }
            WriteState(State(RoundStatus.Running));
            var report = Train(lease, round, reason, Report, ct);
            WriteState(State(RoundStatus.Done));
            RemoveCheckpoints();
            return report;
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            // The trainer wrote a checkpoint before throwing; state.json still says "running", so the next start resumes.
            var checkpoint = new CheckpointManager(CheckpointDirectory, 1).Latest() ?? "(no checkpoint yet: the round restarts)";
            Log.RoundCanceled(_logger, round, checkpoint);
            return Report(RoundOutcome.Canceled) with { Message = checkpoint };
        }
        catch (Exception e)
        {
            Log.RoundFailed(_logger, e, round, lease.Version);
            TryFinishFailed(State(RoundStatus.Failed));
            return Report(RoundOutcome.Failed) with { Message = e.Message, Error = e };
        }
    }

    private RoundReport Train(ModelLease lease, int round, string reason, Func<RoundOutcome, RoundReport> report, CancellationToken ct)
    {
        var serving = lease.Model;
        int vocab = serving.Config.VocabSize;
        if (_options.SequenceLength > serving.Config.MaxPositionEmbeddings)
            throw new InvalidOperationException(
                $"RetrainingOptions.SequenceLength ({_options.SequenceLength}) exceeds the served model's max_position_embeddings ({serving.Config.MaxPositionEmbeddings}).");
        var (train, heldOut) = DataFolder.Load(_options.DataDirectory, _options.ValidationDirectory, _options.HoldoutFraction, _tokenizer, vocab);
        if (train.Length < _options.SequenceLength + 1 || heldOut.Length < _options.SequenceLength + 1)
            throw new InvalidDataException(
                $"Not enough data: {train.Length} training and {heldOut.Length} held-out tokens, but each needs at least SequenceLength + 1 = {_options.SequenceLength + 1}. " +
                "Add data, shorten SequenceLength, or raise HoldoutFraction.");
        Log.RoundStarting(_logger, round, reason, lease.Version, train.Length, heldOut.Length);

        // Train a private copy: the served instance is shared by scorers and must never change under them.
        using var candidate = ModelDirectory.Load(lease.Directory, _store.Device).Model;
        var stages = new List<TrainingStage>();
        try
        {
            for (int i = 0; i < _options.Stages.Count; i++) stages.Add(_kinds.CreateStage(_options.Stages[i], $"RetrainingOptions.Stages[{i}]"));
            var baseMeta = lease.Meta.Clone();
            baseMeta.Tokenizer ??= _tokenizer.Describe();
            var resumeFrom = new CheckpointManager(CheckpointDirectory, 1).Latest();
            long? resumedStep = null;
            if (resumeFrom is not null)
            {
                resumedStep = ModelDirectory.ReadMeta(resumeFrom).Step;
                Log.RoundResuming(_logger, round, resumeFrom);
            }
            var trainerOptions = _options.ToTrainerOptions();
            trainerOptions.CheckpointDirectory = CheckpointDirectory;
            trainerOptions.Resume = resumeFrom is not null;
            trainerOptions.Seed = Seeds.Mix(_options.Seed, round);
            trainerOptions.BaseMeta = baseMeta;
            trainerOptions.Progress = new InlineProgress<TrainingProgress>(p =>
                Log.TrainingProgress(_logger, round, p.Stage, p.Step, p.StageSteps, p.Loss, p.LearningRate, p.TokensPerSecond));
            var trainer = new LoopedLmTrainer(trainerOptions);
            var source = new PackedTokenSource(train, _options.BatchSize, _options.SequenceLength, Seeds.Mix(_options.Seed, round, 1));
            var result = trainer.Train(candidate, source, stages, ct);

            // Validation: both models on the same held-out windows under the same exit rule.
            var exit = ExitMode.Parse(_options.ValidationExit);
            var c = HeldOutEvaluator.Evaluate(candidate, heldOut, _options.SequenceLength, _options.BatchSize, exit, _options.MaxValidationTokens, ct);
            var s0 = HeldOutEvaluator.Evaluate(serving, heldOut, _options.SequenceLength, _options.BatchSize, exit, _options.MaxValidationTokens, ct);
            double cm = c.Get(_options.Metric), sm = s0.Get(_options.Metric);
            Log.Validated(_logger, round, _options.Metric, exit.ToString(), c.Tokens, cm, sm, _options.MinImprovement);
            double improvement = _options.Metric == ValidationMetric.Loss ? sm - cm : cm - sm;
            var scored = report(RoundOutcome.Rejected) with { CandidateMetric = cm, ServingMetric = sm, ResumedFromStep = resumedStep };
            if (!double.IsFinite(cm) || !(improvement > _options.MinImprovement))
            {
                var why = !double.IsFinite(cm)
                    ? $"candidate {_options.Metric} is not finite ({cm})"
                    : $"candidate {_options.Metric} {cm:F4} vs serving {sm:F4} improves by {improvement:F4}, not more than the margin {_options.MinImprovement}";
                Log.RoundRejected(_logger, round, why, lease.Version);
                return scored with { Message = why };
            }

            // Promotion is not cancellable: once begun it finishes (each file write is atomic either way).
            var meta = result.Meta.Clone();
            meta.Metrics["holdout_loss"] = [c.Loss];
            meta.Metrics["holdout_accuracy"] = [c.Accuracy];
            int version = _store.Publish(candidate, meta);
            Log.RoundPromoted(_logger, round, version);
            return scored with { Outcome = RoundOutcome.Promoted, PromotedVersion = version, FinishedUtc = _time.GetUtcNow() };
        }
        finally
        {
            foreach (var s in stages) s.Objective.Dispose();
        }
    }

    private void TryFinishFailed(RoundState failed)
    {
        // A failed round is not resumed (its checkpoint may be the cause); the next round starts from the serving model.
        try
        {
            WriteState(failed);
            RemoveCheckpoints();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // The disk that failed the round may fail this too; the next round clears the folder.
        }
    }

    private void RemoveCheckpoints()
    {
        if (!Directory.Exists(CheckpointDirectory)) return;
        var doomed = CheckpointDirectory + ".deleting-" + Guid.NewGuid().ToString("N")[..8];
        Directory.Move(CheckpointDirectory, doomed);
        Directory.Delete(doomed, recursive: true);
    }

    private RoundState? ReadState()
    {
        var path = Path.Combine(WorkDirectory, StateFile);
        if (!File.Exists(path)) return null;
        try { return JsonSerializer.Deserialize<RoundState>(File.ReadAllText(path)); }
        catch (JsonException) { return null; }   // written atomically, so only a hand edit gets here: start afresh
    }

    private void WriteState(RoundState state)
    {
        Directory.CreateDirectory(WorkDirectory);
        foreach (var d in Directory.GetDirectories(WorkDirectory, "checkpoints.deleting-*")) Directory.Delete(d, recursive: true);
        AtomicDirectory.WriteAllText(Path.Combine(WorkDirectory, StateFile), JsonSerializer.Serialize(state, new JsonSerializerOptions { WriteIndented = true }));
    }

    internal enum RoundStatus { Running, Done, Failed }

    internal sealed class RoundState
    {
        [JsonPropertyName("round")] public int Round { get; set; }
        [JsonPropertyName("base_version")] public int BaseVersion { get; set; }
        [JsonPropertyName("plan")] public List<string> Plan { get; set; } = [];
        [JsonPropertyName("status"), JsonConverter(typeof(JsonStringEnumConverter<RoundStatus>))] public RoundStatus Status { get; set; }
        [JsonPropertyName("data_fingerprint")] public string? DataFingerprint { get; set; }
    }
}

/// <summary>Reports on the calling thread (<see cref="Progress{T}"/> would post to the thread pool).</summary>
internal sealed class InlineProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}
