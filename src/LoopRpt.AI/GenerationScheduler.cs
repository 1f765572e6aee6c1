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

/// <summary>
/// One generated token's log-probability and most likely alternatives (OpenAI's <c>logprobs</c>), from the model's
/// next-token distribution at the token's exit loop, before temperature and top-p (<see cref="GenerationRow.TopLogprobs"/>).
/// </summary>
/// <param name="Token">The token's text (its ids decoded alone; a token that is part of a UTF-8 sequence decodes to U+FFFD).</param>
/// <param name="Id">The token id.</param>
/// <param name="LogProb">Its natural-log probability.</param>
/// <param name="ExitLoop">The loop it exited at (1-indexed): the loops run by the step that produced it.</param>
/// <param name="Top">The most likely tokens at that loop, most likely first (as many as asked for).</param>
public sealed record LoopRptTokenLogProb(string Token, long Id, double LogProb, int ExitLoop, IReadOnlyList<LoopRptTopLogProb> Top);

/// <summary>One alternative of <see cref="LoopRptTokenLogProb.Top"/>.</summary>
/// <param name="Token">The token's text.</param>
/// <param name="Id">The token id.</param>
/// <param name="LogProb">Its natural-log probability.</param>
public sealed record LoopRptTopLogProb(string Token, long Id, double LogProb);

/// <summary>Reply text handed to a streaming caller, with the log-probabilities of the tokens generated since the last delta (empty when not asked for).</summary>
/// <param name="Text">The text.</param>
/// <param name="LogProbs">The tokens' log-probabilities.</param>
public sealed record LoopRptDelta(string Text, IReadOnlyList<LoopRptTokenLogProb> LogProbs);

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
    /// <summary>
    /// Per generated token (end tokens left out), its log-probability and alternatives, when the request asked for them
    /// (<see cref="LoopRptChatClient.TopLogprobsKey"/>); otherwise null.
    /// </summary>
    public IReadOnlyList<LoopRptTokenLogProb>? LogProbs { get; init; }

    /// <summary>Loops spent over all generated tokens.</summary>
    public long LoopsSpent => LoopsUsed.Sum(x => (long)x);

    /// <summary>Mean loops per generated token (NaN when none).</summary>
    public double MeanLoops => LoopsUsed.Length == 0 ? double.NaN : LoopsUsed.Average();
}

/// <summary>
/// Sampling settings of one request. <paramref name="MaxTokens"/>: the request's own limit (null: the room its prompt
/// leaves in the context, at most <paramref name="DefaultMaxTokens"/> when that is set).
/// </summary>
internal sealed record GenerationSettings(int? MaxTokens, int? DefaultMaxTokens, double Temperature, double TopP, ulong Seed, double? ExitThreshold, KvCacheMode KvCache,
    int? TopLogprobs = null);

/// <summary>One queued generation request.</summary>
internal sealed class GenerationRequest(Func<TextCodec, RenderedPrompt> render, GenerationSettings settings, Action<LoopRptDelta>? onText, CancellationToken cancellation)
{
    public Func<TextCodec, RenderedPrompt> Render { get; } = render;
    public GenerationSettings Settings { get; } = settings;
    public Action<LoopRptDelta>? OnText { get; } = onText;
    public CancellationToken Cancellation { get; } = cancellation;
    public TaskCompletionSource<LoopRptGeneration> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    // Set while the request runs on the worker.
    public RenderedPrompt? Prompt;
    public int MaxTokens;
    public TextStream? Stream;
    public readonly List<long> Tokens = [];
    public readonly List<int> Loops = [];
    public readonly List<LoopRptTokenLogProb> LogProbs = [];
    public ReplyFinish? Finish;

    // Characters of reply text handed to OnText, and how many of a rerun's first characters were handed already; the
    // same for log-probabilities.
    private int _sent, _resend, _logProbsSent, _logProbsResent;

    /// <summary>
    /// Hands reply text, with the log-probabilities of the tokens since the last delta, to the caller, leaving out what
    /// an earlier attempt at this reply already sent.
    /// </summary>
    public void Emit(string delta)
    {
        int skip = Math.Min(_resend, delta.Length);
        _resend -= skip;
        if (skip == delta.Length) return;
        int from = Math.Max(_logProbsSent, _logProbsResent);
        var logProbs = LogProbs.Count > from ? LogProbs.GetRange(from, LogProbs.Count - from) : [];
        _logProbsSent = Math.Max(from, LogProbs.Count);
        OnText?.Invoke(new LoopRptDelta(skip == 0 ? delta : delta[skip..], logProbs));
        _sent += delta.Length - skip;
    }

    /// <summary>Clears what a failed attempt produced, so the request can run again; the text it sent is not sent twice.</summary>
    public void Restart(TextCodec codec)
    {
        Tokens.Clear();
        Loops.Clear();
        LogProbs.Clear();
        Finish = null;
        Stream = new TextStream(codec, Prompt!.StopStrings);
        _resend = _sent;
        _sent = 0;
        _logProbsResent = Math.Max(_logProbsResent, _logProbsSent);
        _logProbsSent = 0;
    }
}

/// <summary>
/// Runs generation requests on one worker thread with continuous batching across requests: the worker leases the model
/// and decodes every waiting request in one <see cref="LoopedGenerator.Serve"/> call, which asks the queue for more
/// whenever a row is free, so a request that arrives while a batch decodes joins it at the next tick instead of waiting
/// for the batch to end (requests with another key/value rule or too long for the batch's KV cache wait for the next
/// batch; once the source serves a new model version, new requests wait for the next batch, which leases it). Every row has its own temperature, top-p,
/// exit threshold and a generator seeded from its request, so a seeded request gets the same reply whatever else is
/// queued, and sampled requests batch like greedy ones. A request completes as soon as its row ends. Per-request token
/// budgets, end tokens, stop strings and cancellation end a row without stopping the others. A batch that fails (one
/// row's callback throws, one row's logits are not finite, a native error) does not fail its other rows: each
/// unfinished request runs again alone, so only the one that fails alone fails.
/// </summary>
internal sealed class GenerationScheduler : IDisposable
{
    private readonly ILoopRptModelSource _source;
    private readonly int _batchSize;
    private readonly bool _join;
    private readonly BlockingCollection<GenerationRequest> _queue = new();
    private readonly Thread _worker;

    /// <param name="source">The model.</param>
    /// <param name="batchSize">Rows decoded together at most.</param>
    /// <param name="joinRunningBatch">False: requests that arrive while a batch decodes wait for it to end (<see cref="LoopRptChatClientOptions.JoinRunningBatch"/>).</param>
    public GenerationScheduler(ILoopRptModelSource source, int batchSize, bool joinRunningBatch = true)
    {
        _source = source;
        _batchSize = batchSize;
        _join = joinRunningBatch;
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
        var backlog = new List<GenerationRequest>();                   // taken from the queue, waiting for the next batch
        while (true)
        {
            if (backlog.Count == 0)
            {
                if (!_queue.TryTake(out var first, Timeout.Infinite)) return;
                backlog.Add(first);
            }
            if (!_join)
                while (_queue.TryTake(out var more)) backlog.Add(more);     // the batch is what waits now; later requests wait for the next
            var waiting = new List<GenerationRequest>(backlog);
            backlog.Clear();
            try
            {
                Serve(waiting, backlog);
            }
            catch (Exception e)
            {
                foreach (var r in waiting) r.Completion.TrySetException(e);     // the lease itself failed
            }
        }
    }

    /// <summary>
    /// One batch: <paramref name="waiting"/> first, then whatever the queue holds while rows are free. Requests it cannot
    /// take (another key/value rule, a newer model version) go to <paramref name="backlog"/>.
    /// </summary>
    private void Serve(List<GenerationRequest> waiting, List<GenerationRequest> backlog)
    {
        using var lease = _source.Acquire();
        var ready = waiting.Where(r => Prepare(r, lease)).ToList();
        if (ready.Count == 0) return;
        var kvCache = ready[0].Settings.KvCache;
        int capacity = Capacity(ready.Where(r => r.Settings.KvCache == kvCache), lease);
        var pending = new Queue<GenerationRequest>(ready);
        var running = new List<GenerationRequest>();
        // Set when a request must wait for the next batch (a swap, another cache rule, too long for this cache): the
        // batch then takes no more new requests and drains, so a waiting request is not starved by later arrivals.
        bool draining = false;
        GenerationRow? Next()
        {
            while (true)
            {
                GenerationRequest r;
                if (pending.Count > 0) r = pending.Dequeue();
                else if (draining || !_join || !_queue.TryTake(out r!)) return null;
                else if (!Current(lease))
                {
                    draining = true;
                    backlog.Add(r);
                    return null;
                }
                else if (!Prepare(r, lease)) continue;
                if (r.Settings.KvCache != kvCache || r.Prompt!.Ids.Length + r.MaxTokens > capacity)
                {
                    backlog.Add(r);                                            // another cache rule, or too long for this cache
                    draining = true;
                    continue;
                }
                running.Add(r);
                return Row(r, lease);
            }
        }
        try
        {
            new LoopedGenerator(lease.Model).Serve(Next, _batchSize, kvCache, capacity);
        }
        catch (Exception e)
        {
            backlog.AddRange(pending);
            // Rows that had ended are complete; the rest run again one at a time. A seeded reply is the one its request
            // gets alone, so a stream goes on where it was and sends nothing twice.
            var unfinished = running.Where(r => !r.Completion.Task.IsCompleted).ToList();
            if (running.Count == 1)
            {
                foreach (var r in unfinished) r.Completion.TrySetException(e);
                return;
            }
            foreach (var r in unfinished)
            {
                r.Restart(lease.Codec);
                var once = Row(r, lease);
                try
                {
                    new LoopedGenerator(lease.Model).Serve(() => Interlocked.Exchange(ref once, null), 1, kvCache, Capacity([r], lease));
                }
                catch (Exception alone)
                {
                    r.Completion.TrySetException(alone);
                }
            }
        }
    }

    /// <summary>
    /// Positions per row of a batch's KV cache: what its first requests need (prompt + token budget), rounded up to a
    /// power of two so that requests of a similar size can join, at most the model's context. A request that omits
    /// max_tokens needs the whole context anyway; one that gives a small budget does not pay the context's memory.
    /// </summary>
    private static int Capacity(IEnumerable<GenerationRequest> requests, LoopRptModelLease lease)
    {
        int needed = requests.Max(r => r.Prompt!.Ids.Length + r.MaxTokens);
        return (int)Math.Min(lease.Model.Config.MaxPositionEmbeddings, System.Numerics.BitOperations.RoundUpToPowerOf2((uint)needed));
    }

    /// <summary>
    /// True while the source still serves the leased model (a swap sends new requests to the next batch, as does a source
    /// that fails to lease: the next batch's lease reports the failure to them).
    /// </summary>
    private bool Current(LoopRptModelLease lease)
    {
        try
        {
            using var now = _source.Acquire();
            return now.Version == lease.Version && ReferenceEquals(now.Model, lease.Model);
        }
        catch (Exception)
        {
            return false;
        }
    }

    /// <summary>Renders the request's prompt and settles its token budget; false (the request completed) when it was cancelled or is invalid.</summary>
    private static bool Prepare(GenerationRequest r, LoopRptModelLease lease)
    {
        if (r.Cancellation.IsCancellationRequested)
        {
            r.Completion.TrySetCanceled(r.Cancellation);
            return false;
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
            return true;
        }
        catch (Exception e)
        {
            r.Completion.TrySetException(e);
            return false;
        }
    }

    /// <summary>The request as a decoder row: its own sampling, exit threshold and token budget; it completes when its row ends.</summary>
    private static GenerationRow Row(GenerationRequest r, LoopRptModelLease lease) => new()
    {
        Prompt = r.Prompt!.Ids,
        MaxNewTokens = r.MaxTokens,
        Temperature = r.Settings.Temperature,
        TopP = r.Settings.TopP,
        Seed = r.Settings.Seed,
        Exit = r.Settings.ExitThreshold is { } q ? ExitMode.Q(q) : null,
        TopLogprobs = r.Settings.TopLogprobs,
        OnToken = token =>
        {
            OnToken(r, token, lease.Codec);
            if (!Done(r)) return false;
            Complete(r, lease);
            return true;
        },
    };

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
            r.Finish ?? ReplyFinish.Length, lease.Version, lease.Model.Config.TotalUtSteps)
        { LogProbs = r.Settings.TopLogprobs is null ? null : [.. r.LogProbs] });
    }

    private static void OnToken(GenerationRequest r, GeneratedToken generated, TextCodec codec)
    {
        long token = generated.Id;
        r.Tokens.Add(token);
        r.Loops.Add(generated.Loops);
        if (r.Prompt!.StopTokens.Contains(token))
        {
            r.Finish = ReplyFinish.Stop;
            return;
        }
        if (r.Settings.TopLogprobs is not null)
            r.LogProbs.Add(new LoopRptTokenLogProb(codec.Decode([(int)token]), token, generated.LogProb, generated.Loops,
                generated.Top.Select(t => new LoopRptTopLogProb(codec.Decode([(int)t.Token]), t.Token, t.LogProb)).ToArray()));
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
