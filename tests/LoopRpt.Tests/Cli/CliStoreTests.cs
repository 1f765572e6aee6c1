using System.Net.Http.Json;
using System.Text.Json;
using System.Text.RegularExpressions;
using LoopRpt.Checkpoints;
using LoopRpt.Cli;
using LoopRpt.Hosting;
using LoopRpt.Tests.Server;
using LoopRpt.Tokenization;

namespace LoopRpt.Tests.Cli;

/// <summary><c>looprpt store</c> verbs and <c>looprpt serve --store</c>: a store changed by the verbs while a server follows it.</summary>
[Collection(nameof(ServerCollection))]      // the server meters are process-wide: no other server runs alongside
public class CliStoreTests
{
    private static string Pointer(string store) => File.ReadAllText(Path.Combine(store, ModelStore.CurrentFile)).Trim();

    [Fact]
    public void PublishListPromoteAndRollbackMoveTheCurrentPointer()
    {
        var root = CliRunner.TempDir();
        string store = Path.Combine(root, "store"), a = Path.Combine(root, "a"), b = Path.Combine(root, "b");
        GreedyReplies.SaveByteModel(a, seed: 5).Dispose();
        GreedyReplies.SaveByteModel(b, seed: 9).Dispose();

        var first = CliRunner.Run("store", "publish", "--store", store, "--model", a);
        Assert.True(first.Code == ExitCodes.Success, first.ToString());
        Assert.Contains("v0001", first.Out);
        Assert.Equal("v0001", Pointer(store));                                   // the first version of an empty store is current

        var added = CliRunner.Run("store", "publish", "--store", store, "--model", b);
        Assert.Equal(ExitCodes.Success, added.Code);
        Assert.Equal("v0001", Pointer(store));                                   // added, not promoted
        var list = CliRunner.Run("store", "list", "--store", store);
        Assert.Equal(ExitCodes.Success, list.Code);
        Assert.Matches(@"(?m)^v0001\s+\*", list.Out);
        Assert.Matches(@"(?m)^v0002\s+\d{4}-", list.Out);                         // listed, not current

        Assert.Equal(ExitCodes.Success, CliRunner.Run("store", "promote", "--store", store, "--version", "2").Code);
        Assert.Equal("v0002", Pointer(store));
        var back = CliRunner.Run("store", "rollback", "--store", store);
        Assert.Equal(ExitCodes.Success, back.Code);
        Assert.Contains("current v0001 (was v0002)", back.Out);
        Assert.Equal("v0001", Pointer(store));
        Assert.Equal(ExitCodes.Success, CliRunner.Run("store", "rollback", "--store", store, "--version", "2").Code);
        Assert.Equal("v0002", Pointer(store));

        // The published version is the model: same weights, its tokenizer described.
        using (var original = ModelDirectory.Load(b).Model)
        using (var stored = ModelDirectory.Load(Path.Combine(store, "v0002")).Model)
            Assert.All(original.named_parameters().Zip(stored.named_parameters()), p => Assert.True(TestUtil.BitEqual(p.First.parameter, p.Second.parameter)));   // bitwise: saved and loaded
        Assert.True(ByteTokenizer.Describes(ModelDirectory.ReadMeta(Path.Combine(store, "v0002")).Tokenizer));

        var third = CliRunner.Run("store", "publish", "--store", store, "--model", a, "--promote", "--keep", "2");
        Assert.Equal(ExitCodes.Success, third.Code);
        Assert.Equal("v0003", Pointer(store));
        Assert.False(Directory.Exists(Path.Combine(store, "v0001")));           // pruned to 2 versions
        Directory.Delete(root, recursive: true);
    }

    [Fact]
    public void StoreVerbsRefuseBadInputsWithTheirExitCodes()
    {
        var root = CliRunner.TempDir();
        string store = Path.Combine(root, "store"), a = Path.Combine(root, "a"), bare = Path.Combine(root, "bare");
        GreedyReplies.SaveByteModel(a, seed: 5).Dispose();
        using (var lm = TestUtil.TinyModel(vocab: 64)) ModelDirectory.Save(bare, lm, new ModelMeta());   // no tokenizer described
        File.WriteAllText(Path.Combine(root, "file"), "x");

        void Expect(int code, string message, params string[] args)
        {
            var r = CliRunner.Run(args);
            Assert.True(r.Code == code, r.ToString());
            Assert.Contains(message, r.Err);
        }
        Expect(ExitCodes.InputError, "does not exist", "store", "list", "--store", Path.Combine(root, "none"));
        Expect(ExitCodes.InputError, "does not exist", "store", "publish", "--store", store, "--model", Path.Combine(root, "none"));
        Expect(ExitCodes.Usage, "is a file", "store", "publish", "--store", Path.Combine(root, "file"), "--model", a);
        Expect(ExitCodes.Usage, "--keep must be at least 1", "store", "publish", "--store", store, "--model", a, "--keep", "0");
        Expect(ExitCodes.ModelError, "tokenizer", "store", "publish", "--store", store, "--model", bare);
        Assert.False(Directory.Exists(store));                                   // every refusal came before any work
        Assert.Equal(ExitCodes.Success, CliRunner.Run("store", "publish", "--store", store, "--model", a).Code);
        Expect(ExitCodes.Usage, "holds no version 9", "store", "promote", "--store", store, "--version", "9");
        Expect(ExitCodes.Usage, "--version", "store", "promote", "--store", store);                     // required
        Expect(ExitCodes.InputError, "no version older", "store", "rollback", "--store", store);
        Expect(ExitCodes.Usage, "exactly one of --model", "serve", "--model", a, "--store", store);
        Expect(ExitCodes.Usage, "exactly one of --model", "serve");
        Expect(ExitCodes.Usage, "--retrain needs --store", "serve", "--model", a, "--retrain", Path.Combine(root, "file"));
        Expect(ExitCodes.Usage, "--poll", "serve", "--store", store, "--poll", "-1");
        Expect(ExitCodes.InputError, "holds no version", "serve", "--store", root);
        Expect(ExitCodes.InputError, "is not a JSON settings file", "serve", "--store", store, "--retrain", Path.Combine(root, "file"));
        Assert.Equal("v0001", Pointer(store));
        Directory.Delete(root, recursive: true);
    }

    /// <summary>Runs <c>looprpt serve</c> in-process until the test ends; yields its address.</summary>
    private static async Task<(Task<int> Run, string Url)> Serve(CancellationToken stop, params string[] args)
    {
        var outText = new StringWriter();
        var errText = new StringWriter();
        var output = TextWriter.Synchronized(outText);
        var error = TextWriter.Synchronized(errText);
        string Read(TextWriter w, StringWriter s) { lock (w) return s.ToString(); }
        var run = Task.Run(() => CliApp.Run(["serve", "--urls", "http://127.0.0.1:0", "--threads", "1", .. args], output, error, stop));
        for (int i = 0; i < 600 && !run.IsCompleted; i++)
        {
            await Task.Delay(100);
            if (Regex.Match(Read(output, outText), @"on (http://127\.0\.0\.1:\d+)").Groups[1].Value is { Length: > 0 } url) return (run, url);
        }
        throw new Xunit.Sdk.XunitException($"serve did not report its address.\nstdout: {Read(output, outText)}\nstderr: {Read(error, errText)}");
    }

    private static async Task<int> ServedVersion(HttpClient http, int want)
    {
        for (int i = 0; i < 400; i++)
        {
            var health = await http.GetFromJsonAsync<JsonElement>("/healthz");
            if (health.GetProperty("version").GetInt32() == want) return want;
            await Task.Delay(50);
        }
        return (await http.GetFromJsonAsync<JsonElement>("/healthz")).GetProperty("version").GetInt32();
    }

    [Fact]
    public async Task ServeStoreSwapsToWhatThePublishVerbPromotesWithoutARestart()
    {
        var root = CliRunner.TempDir();
        string store = Path.Combine(root, "store"), a = Path.Combine(root, "a"), b = Path.Combine(root, "b");
        var prompts = new[] { "the cat" };
        string[] replyA, replyB;
        using (var lm = GreedyReplies.SaveByteModel(a, seed: 5)) replyA = GreedyReplies.Of(lm, TextCodec.Bytes(), prompts, 5, ByteTokenizer.EndOfTextId);
        using (var lm = GreedyReplies.SaveByteModel(b, seed: 9)) replyB = GreedyReplies.Of(lm, TextCodec.Bytes(), prompts, 5, ByteTokenizer.EndOfTextId);
        Assert.NotEqual(replyA, replyB);
        Assert.Equal(ExitCodes.Success, CliRunner.Run("store", "publish", "--store", store, "--model", a).Code);
        using var stop = new CancellationTokenSource();
        var (run, url) = await Serve(stop.Token, "--store", store, "--poll", "0.05", "--model-id", "live");
        try
        {
            using var http = new HttpClient { BaseAddress = new Uri(url) };
            async Task<(string Fingerprint, string Text)> Ask()
            {
                var reply = await http.PostAsJsonAsync("/v1/chat/completions", new
                {
                    model = "live", messages = new[] { new { role = "user", content = prompts[0] } }, max_tokens = 5, temperature = 0,
                });
                var json = await reply.Content.ReadFromJsonAsync<JsonElement>();
                Assert.True(reply.IsSuccessStatusCode, json.ToString());
                return (json.GetProperty("system_fingerprint").GetString()!, json.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString()!);
            }
            Assert.Equal(("looprpt-v1", replyA[0]), await Ask());
            Assert.Equal(ExitCodes.Success, CliRunner.Run("store", "publish", "--store", store, "--model", b, "--promote").Code);
            Assert.Equal(2, await ServedVersion(http, 2));
            Assert.Equal(("looprpt-v2", replyB[0]), await Ask());                 // the fingerprint names the version whose weights answered
            Assert.Equal(ExitCodes.Success, CliRunner.Run("store", "rollback", "--store", store).Code);
            Assert.Equal(1, await ServedVersion(http, 1));
            Assert.Equal(("looprpt-v1", replyA[0]), await Ask());
        }
        finally
        {
            stop.Cancel();
        }
        Assert.Equal(ExitCodes.Success, await run.WaitAsync(TimeSpan.FromSeconds(60)));
        Directory.Delete(root, recursive: true);
    }

    /// <summary>Runs `looprpt ARGS` in a process of its own (`dotnet LoopRpt.Tests.dll looprpt ARGS`).</summary>
    private static async Task<(int Code, string Out, string Err)> RunInAnotherProcess(params string[] args)
    {
        var psi = new System.Diagnostics.ProcessStartInfo("dotnet", [typeof(ChildProcess).Assembly.Location, ChildProcess.LooprptVerb, .. args])
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        using var child = System.Diagnostics.Process.Start(psi)!;
        var stdout = child.StandardOutput.ReadToEndAsync();
        var stderr = child.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        await child.WaitForExitAsync(timeout.Token);
        return (child.ExitCode, await stdout, await stderr);
    }

    [Fact]
    public async Task ServeStoreFollowsAVersionPromotedByAnotherProcess()
    {
        var root = CliRunner.TempDir();
        string store = Path.Combine(root, "store"), a = Path.Combine(root, "a"), b = Path.Combine(root, "b");
        GreedyReplies.SaveByteModel(a, seed: 5).Dispose();
        GreedyReplies.SaveByteModel(b, seed: 9).Dispose();
        Assert.Equal(ExitCodes.Success, CliRunner.Run("store", "publish", "--store", store, "--model", a).Code);
        using var stop = new CancellationTokenSource();
        var (run, url) = await Serve(stop.Token, "--store", store, "--poll", "0.2");
        try
        {
            using var http = new HttpClient { BaseAddress = new Uri(url) };
            var child = await RunInAnotherProcess("store", "publish", "--store", store, "--model", b, "--promote");
            Assert.True(child.Code == ExitCodes.Success, $"exit {child.Code}\n{child.Out}\n{child.Err}");
            Assert.Contains("v0002", child.Out);
            Assert.Equal(2, await ServedVersion(http, 2));                        // picked up from the disk, no restart
            var list = await RunInAnotherProcess("store", "list", "--store", store);
            Assert.Matches(@"(?m)^v0002\s+\*", list.Out);
        }
        finally
        {
            stop.Cancel();
        }
        Assert.Equal(ExitCodes.Success, await run.WaitAsync(TimeSpan.FromSeconds(60)));
        Directory.Delete(root, recursive: true);
    }

    [Fact]
    public async Task ServeWithRetrainPromotesARetrainedVersionThatTheServerServes()
    {
        var root = CliRunner.TempDir();
        string store = Path.Combine(root, "store"), a = Path.Combine(root, "a"), data = Path.Combine(root, "data");
        GreedyReplies.SaveByteModel(a, seed: 5).Dispose();
        Directory.CreateDirectory(data);
        File.WriteAllText(Path.Combine(data, "cycle.txt"), string.Concat(Enumerable.Repeat("abcd", 600)));   // learnable in a few steps
        var settings = Path.Combine(root, "appsettings.json");
        File.WriteAllText(settings, JsonSerializer.Serialize(new
        {
            LoopRpt = new
            {
                Root = "ignored: --store wins",
                InitialModelDirectory = a,
                Retraining = new
                {
                    DataDirectory = data, Period = "00:00:00", DataPollInterval = "00:00:00", RunOnStart = true, BatchSize = 2, SequenceLength = 16,
                    CheckpointEvery = 0, LogEvery = 5, HoldoutFraction = 0.2,
                    Stages = new[] { new { Kind = "pretrain", Steps = 8, LearningRate = 1e-2, WarmupFraction = 0.1 } },
                },
            },
        }));
        using var stop = new CancellationTokenSource();
        var (run, url) = await Serve(stop.Token, "--store", store, "--retrain", settings);
        try
        {
            using var http = new HttpClient { BaseAddress = new Uri(url) };
            Assert.Equal(2, await ServedVersion(http, 2));                        // the round at start promoted v2 into the store the server follows
            Assert.Equal("v0002", Pointer(store));
            Assert.True(ModelDirectory.ReadMeta(Path.Combine(store, "v0002")).Metrics.ContainsKey("holdout_loss"));
        }
        finally
        {
            stop.Cancel();
        }
        Assert.Equal(ExitCodes.Success, await run.WaitAsync(TimeSpan.FromSeconds(60)));
        Directory.Delete(root, recursive: true);
    }
}
