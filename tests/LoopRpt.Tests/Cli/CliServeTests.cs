using System.Net.Http.Json;
using System.Text.Json;
using System.Text.RegularExpressions;
using LoopRpt.Cli;

namespace LoopRpt.Tests.Cli;

[Collection(nameof(LoopRpt.Tests.Server.ServerCollection))]      // the server meters are process-wide: no other server runs alongside
public class CliServeTests(TrainedModelFixture fixture) : IClassFixture<TrainedModelFixture>
{
    [Fact]
    public async Task ServeStartsOnATrainedModelAnswersAndStopsOnCancel()
    {
        Assert.Equal(0, fixture.TrainResult.Code);
        var outText = new StringWriter();
        var errText = new StringWriter();
        var output = TextWriter.Synchronized(outText);                      // its methods lock the wrapper itself
        var error = TextWriter.Synchronized(errText);
        string Read(TextWriter w, StringWriter s) { lock (w) return s.ToString(); }
        using var stop = new CancellationTokenSource();
        var run = Task.Run(() => CliApp.Run(["serve", "--model", fixture.Model, "--urls", "http://127.0.0.1:0", "--threads", "1", "--model-id", "trained"],
            output, error, stop.Token));
        try
        {
            string? url = null;
            for (int i = 0; i < 600 && url is null && !run.IsCompleted; i++)
            {
                await Task.Delay(100);
                url = Regex.Match(Read(output, outText), @"on (http://127\.0\.0\.1:\d+)").Groups[1].Value is { Length: > 0 } u ? u : null;
            }
            Assert.True(url is not null, $"serve did not report its address.\nstdout: {Read(output, outText)}\nstderr: {Read(error, errText)}");
            using var http = new HttpClient { BaseAddress = new Uri(url!) };
            var health = await http.GetFromJsonAsync<JsonElement>("/healthz");
            Assert.Equal("trained", health.GetProperty("model").GetString());
            var reply = await http.PostAsJsonAsync("/v1/chat/completions", new
            {
                model = "trained", messages = new[] { new { role = "user", content = "the cat" } }, max_tokens = 5, temperature = 0,
            });
            var json = await reply.Content.ReadFromJsonAsync<JsonElement>();
            Assert.True(reply.IsSuccessStatusCode, json.ToString());
            Assert.InRange(json.GetProperty("usage").GetProperty("completion_tokens").GetInt32(), 1, 5);
        }
        finally
        {
            stop.Cancel();
        }
        Assert.Equal(ExitCodes.Success, await run.WaitAsync(TimeSpan.FromSeconds(60)));
    }
}
