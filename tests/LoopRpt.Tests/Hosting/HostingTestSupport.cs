using System.Collections.Concurrent;
using LoopRpt.Checkpoints;
using LoopRpt.Hosting;
using LoopRpt.Model;
using LoopRpt.Objectives;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LoopRpt.Tests.Hosting;

/// <summary>The Hosting tests share CPU-heavy hosts: run them one class at a time.</summary>
[CollectionDefinition("Hosting", DisableParallelization = true)]
public sealed class HostingCollection;

/// <summary>A scratch folder: models/, data/, an initial tiny model directory.</summary>
internal sealed class Scratch : IDisposable
{
    public const int Vocab = 64;

    public Scratch()
    {
        Root = Path.Combine(Path.GetTempPath(), "looprpt-hosting-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Data);
        using var lm = TestUtil.TinyModel(vocab: Vocab, seed: 5);
        ModelDirectory.Save(Initial, lm, new ModelMeta());
    }

    public string Root { get; }
    public string Models => Path.Combine(Root, "models");
    public string Data => Path.Combine(Root, "data");
    public string Initial => Path.Combine(Root, "initial");

    /// <summary>
    /// A .tokens file a few steps can learn (so promotion tests are decisive and fast on a loaded CPU): a cycle over 4 of
    /// the 64 ids; a random model scores about ln 64 = 4.16 nats, learning the 4-id unigram alone gets to ln 4 = 1.39.
    /// </summary>
    public void WriteData(string name = "a.tokens", int tokens = 2000, int offset = 0)
        => DataFolder.WriteTokens(Path.Combine(Data, name), Enumerable.Range(0, tokens).Select(i => 1 + (i + offset) % 4).ToArray());

    public IEnumerable<string> LeftoverTemporaries()
        => Directory.EnumerateFileSystemEntries(Root, "*", SearchOption.AllDirectories)
            .Where(p => p.Contains(".tmp-", StringComparison.Ordinal) || p.Contains(".deleting-", StringComparison.Ordinal) || p.Contains(".old-", StringComparison.Ordinal));

    public void Dispose()
    {
        try { Directory.Delete(Root, recursive: true); } catch (IOException) { }
    }
}

/// <summary>Collects log entries for assertions on event ids.</summary>
internal sealed class ListLoggerProvider : ILoggerProvider
{
    public ConcurrentQueue<(int EventId, LogLevel Level, string Message)> Entries { get; } = new();

    public ILogger CreateLogger(string categoryName) => new Logger(this);

    public bool Has(int eventId) => Entries.Any(e => e.EventId == eventId);

    public void Dispose() { }

    private sealed class Logger(ListLoggerProvider owner) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => true;
        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            => owner.Entries.Enqueue((eventId.Id, logLevel, formatter(state, exception)));
    }
}

/// <summary>A host with the retraining service over a <see cref="Scratch"/> folder; rounds only on request unless configured.</summary>
internal sealed class TestHost : IAsyncDisposable
{
    private TestHost(IHost host, ListLoggerProvider logs)
    {
        Host = host;
        Logs = logs;
    }

    public IHost Host { get; }
    public ListLoggerProvider Logs { get; }
    public RetrainingService Service => Host.Services.GetRequiredService<RetrainingService>();
    public ModelStore Store => Host.Services.GetRequiredService<ModelStore>();

    public static TestHost Create(Scratch scratch, Action<RetrainingOptions>? configure = null, Action<LoopRptHostingBuilder>? more = null, int keepVersions = 3)
    {
        var builder = Microsoft.Extensions.Hosting.Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        var logs = new ListLoggerProvider();
        builder.Logging.AddProvider(logs).SetMinimumLevel(LogLevel.Debug);
        var lb = builder.Services.AddLoopRptRetraining(
            s => { s.Root = scratch.Models; s.InitialModelDirectory = scratch.Initial; s.KeepVersions = keepVersions; },
            r =>
            {
                r.DataDirectory = scratch.Data;
                r.Period = TimeSpan.Zero;
                r.DataPollInterval = TimeSpan.Zero;
                r.Stages = [Pretrain(Steps)];
                r.BatchSize = 2;
                r.SequenceLength = 16;
                r.CheckpointEvery = 0;
                r.LogEvery = 5;
                configure?.Invoke(r);
            });
        more?.Invoke(lb);
        return new TestHost(builder.Build(), logs);
    }

    /// <summary>A host whose LoopRpt options come from configuration keys (as from appsettings.json), section "LoopRpt".</summary>
    public static TestHost FromConfiguration(Dictionary<string, string?> settings)
    {
        var builder = Microsoft.Extensions.Hosting.Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Configuration.AddInMemoryCollection(settings);
        var logs = new ListLoggerProvider();
        builder.Logging.AddProvider(logs).SetMinimumLevel(LogLevel.Debug);
        builder.Services.AddLoopRptRetraining(builder.Configuration.GetSection("LoopRpt"));
        return new TestHost(builder.Build(), logs);
    }

    /// <summary>Steps of the default one-stage plan.</summary>
    public const int Steps = 6;

    public static LoopRpt.Training.StageDefinition Pretrain(long steps, string kind = "pretrain")
        => new() { Kind = kind, Steps = steps, LearningRate = 1e-2, WarmupFraction = 0.1 };

    /// <summary>Completes with the next round report that satisfies <paramref name="when"/>; subscribe before triggering.</summary>
    public Task<RoundReport> NextRound(Func<RoundReport, bool>? when = null)
    {
        var done = new TaskCompletionSource<RoundReport>(TaskCreationOptions.RunContinuationsAsynchronously);
        var service = Service;
        EventHandler<RoundReport>? handler = null;
        handler = (_, r) =>
        {
            if (when is not null && !when(r)) return;
            service.RoundCompleted -= handler;
            done.TrySetResult(r);
        };
        service.RoundCompleted += handler;
        return done.Task.WaitAsync(TimeSpan.FromSeconds(90));   // a fail-safe against hangs, not a timing assertion
    }

    public async Task<RoundReport> RunRound(string reason = "test")
    {
        var next = NextRound();
        Assert.True(Service.RequestRound(reason));
        return await next;
    }

    public async ValueTask DisposeAsync()
    {
        // A host whose start failed (invalid options) must not be stopped: Host.StopAsync would throw.
        var lifetime = Host.Services.GetRequiredService<IHostApplicationLifetime>();
        if (lifetime.ApplicationStarted.IsCancellationRequested) await Host.StopAsync();
        Host.Dispose();
        if (Environment.GetEnvironmentVariable("LOOPRPT_TEST_LOGS") is { } path)
            File.AppendAllLines(path, Logs.Entries.Select(e => $"{e.EventId} {e.Level} {e.Message}"));
    }
}

/// <summary>Stage I objective that runs a hook before each micro-batch (to throw or to block at a chosen step).</summary>
internal sealed class HookedObjective(Action<long> beforeStep) : ITrainingObjective
{
    private readonly PretrainObjective _inner = new();

    public string Name => _inner.Name;   // same name as pretrain: a resumed plan must match

    public IReadOnlyList<(string Name, Parameter Param)> TrainableParameters(OuroForCausalLM lm) => _inner.TrainableParameters(lm);

    public void Attach(OuroForCausalLM lm) => _inner.Attach(lm);

    public ObjectiveOutput Compute(OuroForCausalLM lm, Tensor inputs, Tensor targets, long step, long stageStep, int microStep)
    {
        beforeStep(step);
        return _inner.Compute(lm, inputs, targets, step, stageStep, microStep);
    }

    public void AfterOptimizerStep(OuroForCausalLM lm, long step) => _inner.AfterOptimizerStep(lm, step);

    public IEnumerable<(string Name, Tensor Tensor)> StateTensors() => _inner.StateTensors();

    public void LoadState(Func<string, Tensor, bool> copyInto) => _inner.LoadState(copyInto);

    public void Dispose() => _inner.Dispose();
}

internal static class StoreFactory
{
    public static ModelStore Open(Scratch scratch, int keep = 3, bool initial = true)
        => new(Options.Create(new ModelStoreOptions { Root = scratch.Models, KeepVersions = keep, InitialModelDirectory = initial ? scratch.Initial : null }),
               new ByteTokenizerService());
}
