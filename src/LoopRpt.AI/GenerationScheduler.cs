using System.Collections.Concurrent;
using LoopRpt.Inference;
using LoopRpt.Model;
using LoopRpt.Tokenization;

namespace LoopRpt.AI;

/// <summary>Why a reply ended.</summary>
public enum ReplyFinish
{
    /// <summary>An end token or a stop string was generated.</summary>
    Stop,
    /// <summary>The token budget was spent.</summary>
    Length,
    /// <summary>The caller cancelled.</summary>
    Cancelled,
}

/// <summary>What one generation request produced (the raw representation of LoopRpt's chat responses).</summary>
/// <param name="Text">The reply text (cut before a stop string; end tokens not included).</param>
/// <param name="PromptTokens">The rendered prompt's token count.</param>
/// <param name="Tokens">Generated token ids (an end token included, as generated).</param>
/// <param name="LoopsUsed">Per generated token, the loops its forward step ran.</param>
/// <param name="Finish">Why it ended.</param>
/// <param name="ModelVersion">The model version that produced every token.</param>
/// <param name="Loops">The model's loops per token at full depth.</param>
public sealed record LoopRptGeneration(string Text, int PromptTokens, long[] Tokens, int[] LoopsUsed, ReplyFinish Finish, int ModelVersion, int Loops)
{
    /// <summary>Loops spent over all generated tokens.</summary>
    public long LoopsSpent => LoopsUsed.Sum(x => (long)x);

    /// <summary>Mean loops per generated token (NaN when none).</summary>
    public double MeanLoops => LoopsUsed.Length == 0 ? double.NaN : LoopsUsed.Average();
}

/// <summary>
/// Sampling settings of one request. <paramref name="MaxTokens"/>: the request's own limit (null: the room its prompt
/// leaves in the context, at most <paramref name="DefaultMaxTokens"/> when that is set).
/// </summary>
internal sealed record GenerationSettings(int? MaxTokens, int? DefaultMaxTokens, double Temperature, double TopP, ulong Seed, double? ExitThreshold, KvCacheMode KvCache);

/// <summary>One queued generation request.</summary>
internal sealed class GenerationRequest(Func<TextCodec, RenderedPrompt> render, GenerationSettings settings, Action<string>? onText, CancellationToken cancellation)
{
    public Func<TextCodec, RenderedPrompt> Render { get; } = render;
    public GenerationSettings Settings { get; } = settings;
    public Action<string>? OnText { get; } = onText;
    public CancellationToken Cancellation { get; } = cancellation;
    public TaskCompletionSource<LoopRptGeneration> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    // Set while the request runs on the worker.
    public RenderedPrompt? Prompt;
    public int MaxTokens;
    public TextStream? Stream;
    public readonly List<long> Tokens = [];
    public readonly List<int> Loops = [];
    public ReplyFinish? Finish;

    // Characters of reply text handed to OnText, and how many of a rerun's first characters were handed already.
    private int _sent, _resend;

    /// <summary>Hands reply text to the caller, leaving out what an earlier attempt at this reply already sent.</summary>
    public void Emit(string delta)
    {
        int skip = Math.Min(_resend, delta.Length);
        _resend -= skip;
        if (skip == delta.Length) return;
        OnText?.Invoke(skip == 0 ? delta : delta[skip..]);
        _sent += delta.Length - skip;
    }

    /// <summary>Clears what a failed attempt produced, so the request can run again; the text it sent is not sent twice.</summary>
    public void Restart(TextCodec codec)
    {
        Tokens.Clear();
        Loops.Clear();
        Finish = null;
        Stream = new TextStream(codec, Prompt!.StopStrings);
        _resend = _sent;
        _sent = 0;
    }
}

/// <summary>
/// Runs generation requests on one worker thread, batching concurrent callers. Requests that arrive while a batch runs
/// wait for it; the worker then takes every waiting request, leases the model once, and runs greedy requests with the
/// same exit threshold as one <see cref="LoopedGenerator.GenerateBatch"/> call (continuous batching: rows free up as
/// replies end and take the next waiting prompt; each reply is the one its prompt gets alone). Sampled requests run
/// alone, so a fixed seed gives the same reply whatever else is queued. Per-request token budgets, end tokens, stop
/// strings and cancellation end a row through <see cref="GenerationOptions.StopWhen"/> without stopping the others.
/// A batch that fails (one row's callback throws, one row's logits are not finite, a native error) does not fail its
/// other rows: each unfinished request runs again alone, so only the one that fails alone fails.
/// </summary>
internal sealed class GenerationScheduler : IDisposable
{
    private readonly ILoopRptModelSource _source;
    private readonly int _batchSize;
    private readonly BlockingCollection<GenerationRequest> _queue = new();
    private readonly Thread _worker;

    public GenerationScheduler(ILoopRptModelSource source, int batchSize)
    {
        _source = source;
        _batchSize = batchSize;
        _worker = new Thread(Work) { IsBackground = true, Name = "LoopRpt generation" };
        _worker.Start();
    }

    public Task<LoopRptGeneration> Enqueue(GenerationRequest request)
    {
        try
        {
            _queue.Add(request, request.Cancellation);
        }
        catch (InvalidOperationException)
        {
            throw new ObjectDisposedException(nameof(LoopRptChatClient));
        }
        return request.Completion.Task;
    }

    private void Work()
    {
        foreach (var first in _queue.GetConsumingEnumerable())
        {
            var taken = new List<GenerationRequest> { first };
            while (_queue.TryTake(out var more)) taken.Add(more);
            try
            {
                RunAll(taken);
            }
            catch (Exception e)
            {
                foreach (var r in taken) r.Completion.TrySetException(e);
            }
        }
    }

    private void RunAll(List<GenerationRequest> requests)
    {
        using var lease = _source.Acquire();
        var ready = new List<GenerationRequest>();
        foreach (var r in requests)
        {
            if (r.Cancellation.IsCancellationRequested)
            {
                r.Completion.TrySetCanceled(r.Cancellation);
                continue;
            }
            try
            {
                r.Prompt = r.Render(lease.Codec);
                int context = lease.Model.Config.MaxPositionEmbeddings, prompt = r.Prompt.Ids.Length;
                r.MaxTokens = r.Settings.MaxTokens ?? Math.Min(context - prompt, r.Settings.DefaultMaxTokens ?? int.MaxValue);
                if (r.Settings.MaxTokens is null && prompt >= context)
                    throw new ArgumentOutOfRangeException("messages", prompt,
                        $"The prompt has {prompt} tokens; the model's context is {context} tokens (max_position_embeddings), leaving no room for a reply.");
                if (prompt + r.MaxTokens > context)
                    throw new ArgumentOutOfRangeException("messages", prompt + r.MaxTokens,
                        $"The prompt has {prompt} tokens and up to {r.MaxTokens} are to be generated; the model's context is {context} tokens (max_position_embeddings).");
                r.Stream = new TextStream(lease.Codec, r.Prompt.StopStrings);
                ready.Add(r);
            }
            catch (Exception e)
            {
                r.Completion.TrySetException(e);
            }
        }
        var groups = ready.GroupBy(r => r.Settings.Temperature == 0 ? (object)(r.Settings.ExitThreshold, r.Settings.KvCache) : r);
        foreach (var group in groups) Run(group.ToList(), lease);
    }

    private void Run(List<GenerationRequest> group, LoopRptModelLease lease)
    {
        try
        {
            Generate(group, lease);
        }
        catch (Exception e) when (group.Count == 1)
        {
            group[0].Completion.TrySetException(e);
            return;
        }
        catch (Exception)
        {
            // Rows that had ended are complete; the rest run again one at a time. A greedy reply is the one its prompt
            // gets alone, so a stream goes on where it was and sends nothing twice.
            foreach (var r in group.Where(r => r.Finish is null))
            {
                r.Restart(lease.Codec);
                try
                {
                    Generate([r], lease);
                }
                catch (Exception alone)
                {
                    r.Completion.TrySetException(alone);
                }
            }
        }
        foreach (var r in group.Where(r => !r.Completion.Task.IsCompleted)) Complete(r, lease);
    }

    private void Generate(List<GenerationRequest> group, LoopRptModelLease lease)
    {
        var s = group[0].Settings;
        var options = new GenerationOptions
        {
            MaxNewTokens = group.Max(r => r.MaxTokens),
            Temperature = s.Temperature,
            TopP = s.TopP,
            Seed = s.Seed,
            Exit = s.ExitThreshold is { } q ? ExitMode.Q(q) : null,
            KvCache = s.KvCache,
            BatchSize = _batchSize,
            OnToken = (i, token, loops) => OnToken(group[i], token, loops),
            StopWhen = i => Done(group[i]),
        };
        new LoopedGenerator(lease.Model).GenerateBatch(group.Select(r => (IReadOnlyList<long>)r.Prompt!.Ids).ToList(), options);
    }

    private static void Complete(GenerationRequest r, LoopRptModelLease lease)
    {
        if (r.Finish == ReplyFinish.Cancelled)
        {
            r.Completion.TrySetCanceled(r.Cancellation);
            return;
        }
        var rest = r.Stream!.Flush();
        if (rest.Length > 0) r.Emit(rest);
        r.Completion.TrySetResult(new LoopRptGeneration(r.Stream.Text, r.Prompt!.Ids.Length, [.. r.Tokens], [.. r.Loops],
            r.Finish ?? ReplyFinish.Length, lease.Version, lease.Model.Config.TotalUtSteps));
    }

    private static void OnToken(GenerationRequest r, long token, int loops)
    {
        r.Tokens.Add(token);
        r.Loops.Add(loops);
        if (r.Prompt!.StopTokens.Contains(token))
        {
            r.Finish = ReplyFinish.Stop;
            return;
        }
        var delta = r.Stream!.Add(token);
        if (delta.Length > 0) r.Emit(delta);
        if (r.Stream.Stopped) r.Finish = ReplyFinish.Stop;
    }

    private static bool Done(GenerationRequest r)
    {
        if (r.Finish is not null) return true;
        if (r.Cancellation.IsCancellationRequested) r.Finish = ReplyFinish.Cancelled;
        else if (r.Tokens.Count >= r.MaxTokens) r.Finish = ReplyFinish.Length;
        return r.Finish is not null;
    }

    public void Dispose()
    {
        _queue.CompleteAdding();
        _worker.Join();
        _queue.Dispose();
    }
}
