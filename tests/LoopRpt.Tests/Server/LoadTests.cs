using System.Diagnostics;
using LoopRpt.AI;
using LoopRpt.Checkpoints;
using LoopRpt.Hosting;
using LoopRpt.Inference;
using LoopRpt.Model;
using LoopRpt.Tests.AI;
using LoopRpt.Tokenization;
using Microsoft.Extensions.Options;
using OpenAI.Chat;
using Xunit.Abstractions;
using AIChatMessage = Microsoft.Extensions.AI.ChatMessage;
using AIChatRole = Microsoft.Extensions.AI.ChatRole;

namespace LoopRpt.Tests.Server;

[Collection(nameof(ServerCollection))]
public class LoadTests(ITestOutputHelper output)
{
    private const int Requests = 200, Clients = 16, MaxTokens = 8;
    private static readonly string[] Prompts = ["hello", "loop twice", "abc", "what is q"];

    private static async Task SpinWaitFor(Func<bool> condition)
    {
        while (!condition()) await Task.Delay(1);
    }

    private static long RssBytes()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        return 0;
    }

    private static string[] Expected(OuroForCausalLM lm, TextCodec codec) => GreedyReplies.Of(lm, codec, Prompts, MaxTokens, LettersTokenizer.EndOfText);

    [Fact]
    public async Task TwoHundredRequestsFromSixteenClientsAcrossAModelSwap()
    {
        var root = Path.Combine(Path.GetTempPath(), "looprpt-load-" + Guid.NewGuid().ToString("N"));
        var initial = root + "-initial";
        var tokenizer = new LettersTokenizer();
        var codec = tokenizer.ToTextCodec();
        try
        {
            using var v1 = Inference.InferenceTestUtil.SpreadGateModel(seed: 1);
            using var v2 = Inference.InferenceTestUtil.SpreadGateModel(seed: 2);
            ModelDirectory.Save(initial, v1, new ModelMeta());
            var expected = new Dictionary<string, string[]> { ["looprpt-v1"] = Expected(v1, codec), ["looprpt-v2"] = Expected(v2, codec) };
            Assert.NotEqual(expected["looprpt-v1"], expected["looprpt-v2"]);       // a swap is visible in the replies

            using var store = new ModelStore(Options.Create(new ModelStoreOptions { Root = root, InitialModelDirectory = initial }), tokenizer);
            await using var server = await LoopbackServer.StartAsync(new ModelStoreSource(store, "tiny-test"));
            var chat = server.OpenAI.GetChatClient("tiny-test");
            var options = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = MaxTokens };
            for (int i = 0; i < 20; i++) await chat.CompleteChatAsync([new UserChatMessage(Prompts[i % Prompts.Length])], options);   // warm-up
            GC.Collect();
            GC.WaitForPendingFinalizers();
            long rssBefore = RssBytes();

            using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(120));
            var latencies = new double[Requests];
            var results = new (string Fingerprint, string Text, int Prompt)[Requests];
            var failures = new List<string>();
            int next = -1;
            Task? swap = null;
            var clock = Stopwatch.StartNew();
            var clients = Enumerable.Range(0, Clients).Select(_ => Task.Run(async () =>
            {
                int i;
                while ((i = Interlocked.Increment(ref next)) < Requests)
                {
                    if (i == Requests / 2) swap = Task.Run(() => store.Publish(v2, new ModelMeta()));   // promoted while requests flow
                    // The last quarter waits for the swap: continuous batching can answer the rest before a publish ends.
                    if (i >= Requests * 3 / 4) await SpinWaitFor(() => swap is not null).ContinueWith(_ => swap!).Unwrap();
                    int p = i % Prompts.Length;
                    var watch = Stopwatch.StartNew();
                    try
                    {
                        ChatCompletion c = await chat.CompleteChatAsync([new UserChatMessage(Prompts[p])], options, limit.Token);
                        results[i] = (c.SystemFingerprint, c.Content.Count == 0 ? "" : c.Content[0].Text, p);
                    }
                    catch (Exception e)
                    {
                        lock (failures) failures.Add($"request {i}: {e.GetType().Name}: {e.Message}");
                    }
                    latencies[i] = watch.Elapsed.TotalMilliseconds;
                }
            })).ToArray();
            await Task.WhenAll(clients);
            await swap!;
            double seconds = clock.Elapsed.TotalSeconds;
            GC.Collect();
            GC.WaitForPendingFinalizers();
            long rssAfter = RssBytes();

            var sorted = latencies.Order().ToArray();
            double P(double f) => sorted[(int)Math.Min(sorted.Length - 1, Math.Ceiling(f * sorted.Length) - 1)];
            var byVersion = results.GroupBy(r => r.Fingerprint).ToDictionary(g => g.Key ?? "none", g => g.Count());
            output.WriteLine($"load: {Requests} requests, {Clients} clients, {failures.Count} failed, {seconds:F2} s ({Requests / seconds:F0} req/s), " +
                $"p50 {P(0.50):F1} ms, p95 {P(0.95):F1} ms, versions {string.Join(", ", byVersion.Select(kv => $"{kv.Key}: {kv.Value}"))}, " +
                $"RSS before {rssBefore / 1048576.0:F0} MiB, after {rssAfter / 1048576.0:F0} MiB");

            Assert.Empty(failures);
            Assert.Equal(2, byVersion.Count);                                        // the swap happened mid-run
            foreach (var r in results) Assert.Equal(expected[r.Fingerprint][r.Prompt], r.Text);   // each reply is wholly one version's
            Assert.Equal(2, store.CurrentVersion);
            Assert.Equal(1, store.LiveModels);                                       // the old model was disposed after its last request
            Assert.True(rssAfter - rssBefore < 150L * 1048576, $"RSS grew by {(rssAfter - rssBefore) / 1048576.0:F0} MiB over the run");
        }
        finally
        {
            foreach (var d in new[] { root, initial }) if (Directory.Exists(d)) Directory.Delete(d, true);
        }
    }
}
