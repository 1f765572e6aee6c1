using System.Collections.Concurrent;
using LoopRpt.Cli.Commands;
using LoopRpt.Hosting;
using LoopRpt.Tests.Cli;
using LoopRpt.Tokenization;
using Microsoft.Extensions.DependencyInjection;
using OpenAI.Chat;
using Xunit.Abstractions;

namespace LoopRpt.Tests.Server;

/// <summary>
/// <c>looprpt serve --store</c>'s services (the CLI's own registration) under continuous official-client traffic while
/// the store is changed through the <c>looprpt store</c> verbs' code path — another <see cref="ModelStore"/> over the same
/// directory, as another process would: the server only sees the disk. Callers mix chat completions, streamed chat
/// completions and embeddings.
/// </summary>
[Collection(nameof(ServerCollection))]
public class LiveSwapTests(ITestOutputHelper output)
{
    private const int Callers = 6, MaxTokens = 6, RepliesPerPhase = 24;
    private static readonly string[] Prompts = ["hello", "loop twice", "abc", "what is q"];

    [Fact]
    public async Task OfficialClientsSeeNoFailureAcrossTwoSwapsMadeByTheStoreVerbs()
    {
        var root = CliRunner.TempDir();
        string store = Path.Combine(root, "store"), a = Path.Combine(root, "a"), b = Path.Combine(root, "b");
        try
        {
            var codec = TextCodec.Bytes();
            string[] repliesA, repliesB;
            using (var lmA = GreedyReplies.SaveByteModel(a, seed: 5)) repliesA = GreedyReplies.Of(lmA, codec, Prompts, MaxTokens, ByteTokenizer.EndOfTextId);
            using (var lmB = GreedyReplies.SaveByteModel(b, seed: 9)) repliesB = GreedyReplies.Of(lmB, codec, Prompts, MaxTokens, ByteTokenizer.EndOfTextId);
            Assert.NotEqual(repliesA, repliesB);                                     // a swap is visible in the replies
            // v1 = A; v2 = B (publish --promote); rollback makes v1 current again: each fingerprint names its weights.
            var expected = new Dictionary<string, string[]> { ["looprpt-v1"] = repliesA, ["looprpt-v2"] = repliesB };
            var publishA = CliRunner.Run("store", "publish", "--store", store, "--model", a);
            Assert.True(publishA.Code == 0, publishA.ToString());

            await using var server = await LoopbackServer.StartAsync(StoreServing.Configure(store, null, "cpu", TimeSpan.FromMilliseconds(50), "tiny-test").Register);
            var serving = server.Services.GetRequiredService<ModelStore>();
            var chat = server.OpenAI.GetChatClient("tiny-test");
            var embedder = server.OpenAI.GetEmbeddingClient("tiny-test");
            int embeddings = 0;
            var options = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = MaxTokens };
            using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(120));   // a fail-safe against hangs
            var replies = new ConcurrentQueue<(string Fingerprint, string Text, int Prompt)>();
            var failures = new ConcurrentQueue<string>();
            bool done = false;
            var callers = Enumerable.Range(0, Callers).Select(c => Task.Run(async () =>
            {
                for (int i = c; !Volatile.Read(ref done) && !limit.IsCancellationRequested; i++)
                {
                    int p = i % Prompts.Length;
                    try
                    {
                        switch (i % 5)
                        {
                            case 0:                                                 // a stream: the fingerprint rides on every chunk
                                var text = new System.Text.StringBuilder();
                                var prints = new HashSet<string?>();
                                await foreach (var u in chat.CompleteChatStreamingAsync([new UserChatMessage(Prompts[p])], options, limit.Token))
                                {
                                    prints.Add(u.SystemFingerprint);
                                    foreach (var part in u.ContentUpdate) text.Append(part.Text);
                                }
                                prints.Remove(null);
                                if (prints.Count != 1) throw new InvalidOperationException($"a stream named {prints.Count} versions: {string.Join(", ", prints)}");
                                replies.Enqueue((prints.Single()!, text.ToString(), p));
                                break;
                            case 1:                                                 // embeddings: no fingerprint, must not fail
                                var vector = await embedder.GenerateEmbeddingAsync(Prompts[p], cancellationToken: limit.Token);
                                if (vector.Value.ToFloats().Length == 0) throw new InvalidOperationException("an empty embedding");
                                Interlocked.Increment(ref embeddings);
                                break;
                            default:
                                ChatCompletion reply = await chat.CompleteChatAsync([new UserChatMessage(Prompts[p])], options, limit.Token);
                                replies.Enqueue((reply.SystemFingerprint, reply.Content.Count == 0 ? "" : reply.Content[0].Text, p));
                                break;
                        }
                    }
                    catch (Exception e)
                    {
                        failures.Enqueue($"{e.GetType().Name}: {e.Message}");
                    }
                }
            })).ToArray();

            // Waits until the server serves `version`, then for RepliesPerPhase replies of it.
            var clock = System.Diagnostics.Stopwatch.StartNew();
            async Task Served(int version)
            {
                output.WriteLine($"{clock.Elapsed.TotalSeconds:F2} s: waiting for v{version}; {replies.Count} replies so far");
                while (serving.CurrentVersion != version && !limit.IsCancellationRequested) await Task.Delay(10);
                int before = replies.Count(r => r.Fingerprint == $"looprpt-v{version}");
                while (replies.Count(r => r.Fingerprint == $"looprpt-v{version}") < before + RepliesPerPhase && !limit.IsCancellationRequested && failures.IsEmpty)
                    await Task.Delay(10);
            }

            await Served(1);
            var swap1 = CliRunner.Run("store", "publish", "--store", store, "--model", b, "--promote");
            Assert.True(swap1.Code == 0, swap1.ToString());
            await Served(2);
            var swap2 = CliRunner.Run("store", "rollback", "--store", store);
            Assert.True(swap2.Code == 0, swap2.ToString());
            Assert.Contains("current v0001 (was v0002)", swap2.Out);
            await Served(1);
            Volatile.Write(ref done, true);
            await Task.WhenAll(callers);
            output.WriteLine($"{clock.Elapsed.TotalSeconds:F2} s: callers done; live models {serving.LiveModels}");

            var byVersion = replies.GroupBy(r => r.Fingerprint ?? "none").ToDictionary(g => g.Key, g => g.Count());
            output.WriteLine($"live swap: {replies.Count} chat replies (a fifth streamed) and {embeddings} embeddings from {Callers} callers, {failures.Count} failed, versions {string.Join(", ", byVersion.Select(kv => $"{kv.Key}: {kv.Value}"))}");
            Assert.Empty(failures);
            Assert.True(embeddings > 0);
            Assert.False(limit.IsCancellationRequested, "the run hit its fail-safe limit");
            Assert.Equal(["looprpt-v1", "looprpt-v2"], byVersion.Keys.Order());
            foreach (var r in replies) Assert.Equal(expected[r.Fingerprint][r.Prompt], r.Text);   // each reply wholly from the weights its fingerprint names
            Assert.True(SpinWait.SpinUntil(() => serving.LiveModels == 1, TimeSpan.FromSeconds(10)), $"{serving.LiveModels} models still loaded");
            output.WriteLine($"{clock.Elapsed.TotalSeconds:F2} s: one model left");
        }
        finally
        {
            try { Directory.Delete(root, recursive: true); } catch (IOException) { }
        }
    }
}
